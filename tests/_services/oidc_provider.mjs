// A real OpenID provider for the console's browser tests: panva's oidc-provider with its
// development login pages (any password; the login name picks the user).
//
//   node oidc_provider.mjs CONFIG_JSON
//
// CONFIG_JSON: {"port": N, "module": "<...>/node_modules/oidc-provider/lib/index.js",
//               "client_id": "...", "client_secret": "...",
//               "redirect_uris": ["http://127.0.0.1:N/console/auth/callback"],
//               "users": {"alice": {"name": "Alice", "groups": ["approvers"]}}}
// Prints one line "listening <issuer>" once it accepts connections.
import { pathToFileURL } from 'node:url';

const config = JSON.parse(process.argv[2]);
// Installed under <repo>/.cache/npm, not beside this file: import it by its path.
const { default: Provider } = await import(pathToFileURL(config.module).href);
const users = config.users;

const provider = new Provider(`http://127.0.0.1:${config.port}`, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    post_logout_redirect_uris: config.post_logout_redirect_uris ?? [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  // Entra ID and Keycloak put groups in the ID token; so does this provider.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['test-only-cookie-key-not-a-secret'] },
  async findAccount(ctx, id) {
    if (!(id in users)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...users[id] };
      },
    };
  },
});
provider.proxy = false;

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening http://127.0.0.1:${config.port}`);
});

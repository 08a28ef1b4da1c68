"""The control plane's HTTP routes, one router per resource; ``create_app`` mounts them.

    app.include_router(state.router(service, context, max_bytes=config.max_state_bytes))

Each module builds an ``APIRouter`` over a service that already holds the rules
(``StateService``, ``RunService``, ``EnvironmentService``, ``DriftService``, the audit log);
a route authenticates, validates the workspace name and hands over to the service.
"""

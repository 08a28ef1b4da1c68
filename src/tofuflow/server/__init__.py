"""The tofuflow control plane: state service (HTTP backend protocol), auth, audit."""

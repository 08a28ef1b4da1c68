"""Ephemeral environments: a workspace with an owner and a TTL, always torn down.

from tofuflow.envs import create_environment, deploy_environment, destroy_environment
from tofuflow.envs import reap_once, Reaper
"""

from tofuflow.envs._lifecycle import (
    create_environment,
    deploy_environment,
    destroy_environment,
    environment_workspace,
    parse_duration,
)
from tofuflow.envs._reaper import Reaper, ReapReport, default_holder, reap_once

__all__ = [
    "ReapReport",
    "Reaper",
    "create_environment",
    "default_holder",
    "deploy_environment",
    "destroy_environment",
    "environment_workspace",
    "parse_duration",
    "reap_once",
]

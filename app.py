"""sfn-pauser: hold Step Functions executions at a checkpoint during maintenance.

Every entry point of the product is on this page; the work is in chalicelib/.
"""

import logging
import threading
from typing import Any

from chalice import Chalice

from chalicelib.commands import parse_resume, parse_status, parse_switch
from chalicelib.config import Settings
from chalicelib.deadline import API_GATEWAY_SECONDS, Deadline
from chalicelib.services import Services

app = Chalice(app_name="sfn-pauser")
# Chalice logs at ERROR by default; decisions are logged at INFO (LogLevel overrides).
app.log.setLevel(logging.INFO)


# Start of Event Handlers.
@app.lambda_function(name="pauser")
def pauser(event: Any, context: Any) -> dict[str, Any]:
    """The checkpoint Task's handler (``lambda:invoke.waitForTaskToken``)."""
    return get_services().pauser.handle(event, Deadline.for_context(context))


@app.route("/maintenance", methods=["POST"])
def switch_maintenance() -> dict[str, Any]:
    command = parse_switch(app.current_request.json_body)
    return get_services().control.switch(
        command.machine,
        command.enabled,
        actor=_caller(),
        reason=command.reason,
        resume=command.resume,
        deadline=_api_deadline(),
    )


@app.route("/maintenance", methods=["GET"])
def maintenance_status() -> dict[str, Any]:
    machine = parse_status(app.current_request.query_params)
    return get_services().control.status(machine)


@app.route("/resume", methods=["POST"])
def resume_held() -> dict[str, Any]:
    command = parse_resume(app.current_request.json_body)
    return get_services().control.resume(command.machine, force=command.force, deadline=_api_deadline())


# End of Event Handlers.

_services: dict[Settings, Services] = {}
_services_lock = threading.Lock()


def get_services() -> Services:
    """The app's object graph for the current configuration, built on first use."""
    settings = Settings.from_env()
    with _services_lock:
        if settings not in _services:
            app.log.setLevel(settings.log_level)
            _services[settings] = Services.build(settings, app.log)
        return _services[settings]


def _api_deadline() -> Deadline:
    return Deadline.for_context(app.lambda_context, cap_seconds=API_GATEWAY_SECONDS)


def _caller() -> str:
    identity = (app.current_request.context or {}).get("identity") or {}
    return identity.get("userArn") or identity.get("caller") or "unknown"

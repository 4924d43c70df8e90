"""sfn-pauser: hold Step Functions executions at a checkpoint during maintenance.

Every entry point of the product is on this page; the work is in chalicelib/.
"""

import logging
import threading
from typing import Any

from chalice import Chalice, Rate

from chalicelib.arns import account_region_of
from chalicelib.commands import json_body, parse_resume, parse_status, parse_switch
from chalicelib.config import Settings
from chalicelib.continuation import parse_continuation
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


@app.lambda_function(name="resumer")
def resumer(event: Any, context: Any) -> dict[str, Any]:
    """Carries on a resume that ran out of time (invoked asynchronously by the others)."""
    machine, generation = parse_continuation(event)
    report = get_services().drainer.drain(machine, Deadline.for_context(context), generation=generation)
    return report.as_dict()


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweep")
def sweep(event: Any) -> dict[str, Any]:
    """Refreshes flag mirrors, lifts expired maintenance, resumes what a lift left behind."""
    home = account_region_of(getattr(event.context, "invoked_function_arn", "") or "")
    return get_services().sweeper.sweep(Deadline.for_context(event.context), home).as_dict()


@app.route("/maintenance", methods=["POST"])
def switch_maintenance() -> dict[str, Any]:
    command = parse_switch(json_body(app.current_request.raw_body))
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
    command = parse_resume(json_body(app.current_request.raw_body))
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

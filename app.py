"""sfn-pauser: hold Step Functions executions at a checkpoint during maintenance.

Every entry point of the product is on this page; the work is in chalicelib/.
"""

import logging
import threading
from typing import Any

from chalice import Chalice, IAMAuthorizer, Rate, Response

from chalicelib.arns import AccountRegion, account_region_of
from chalicelib.commands import (
    json_body,
    parse_abort,
    parse_hold_audit_page,
    parse_hold_id,
    parse_holds_query,
    parse_new_hold,
    parse_page,
    parse_renew,
    parse_resume,
    parse_status,
    parse_switch,
)
from chalicelib.config import Settings
from chalicelib.continuation import parse_continuation
from chalicelib.deadline import API_GATEWAY_SECONDS, Deadline
from chalicelib.services import Services

app = Chalice(app_name="sfn-pauser")
# Chalice logs at ERROR by default; decisions are logged at INFO (LogLevel overrides).
app.log.setLevel(logging.INFO)
# Every route is signed with SigV4 in the deployed stages (chalice local and the
# test client do not enforce it; the packaged template shows AWS_IAM on each route).
iam = IAMAuthorizer()


# Start of Event Handlers.
@app.lambda_function(name="pauser")
def pauser(event: Any, context: Any) -> dict[str, Any]:
    """The checkpoint Task's handler (``lambda:invoke.waitForTaskToken``)."""
    return get_services().pauser.handle(event, Deadline.for_context(context))


@app.lambda_function(name="resumer")
def resumer(event: Any, context: Any) -> dict[str, Any]:
    """Carries on a resume that ran out of time (invoked asynchronously by the others)."""
    continuation = parse_continuation(event)
    report = get_services().drainer.carry_on(continuation, Deadline.for_context(context))
    return report.as_dict()


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweep")
def sweep(event: Any) -> dict[str, Any]:
    """Refreshes flag mirrors, lifts expired maintenance, resumes what a lift left behind."""
    home = account_region_of(getattr(event.context, "invoked_function_arn", "") or "")
    return get_services().sweeper.sweep(Deadline.for_context(event.context), home).as_dict()


@app.route("/maintenance", methods=["POST"], authorizer=iam)
def switch_maintenance() -> dict[str, Any]:
    command = parse_switch(json_body(app.current_request.raw_body))
    return get_services().holds.switch(command, _caller(), _api_deadline())


@app.route("/maintenance", methods=["GET"], authorizer=iam)
def maintenance_status() -> dict[str, Any]:
    query = app.current_request.query_params or {}
    if "stateMachineArn" in query:
        return get_services().holds.status(parse_status(query))
    return get_services().holds.overview(parse_page(query, machine_required=False))


@app.route("/maintenance/paused", methods=["GET"], authorizer=iam)
def paused_executions() -> dict[str, Any]:
    page = parse_page(app.current_request.query_params, machine_required=True)
    return get_services().control.paused(page.machine, page)


@app.route("/resume", methods=["POST"], authorizer=iam)
def resume_held() -> dict[str, Any]:
    command = parse_resume(json_body(app.current_request.raw_body))
    return get_services().holds.resume(command, _caller(), _api_deadline())


@app.route("/abort", methods=["POST"], authorizer=iam)
def abort_held() -> dict[str, Any]:
    command = parse_abort(json_body(app.current_request.raw_body))
    return get_services().control.abort(command, _caller(), _api_deadline())


@app.route("/audit", methods=["GET"], authorizer=iam)
def audit_trail() -> dict[str, Any]:
    page = parse_page(app.current_request.query_params, machine_required=True)
    return get_services().control.audit(page.machine, page)


@app.route("/holds", methods=["POST"], authorizer=iam)
def take_hold() -> Response:
    services = get_services()
    new = parse_new_hold(json_body(app.current_request.raw_body), services.hold_limits)
    return Response(services.holds.take(new, _caller()), status_code=201)


@app.route("/holds", methods=["GET"], authorizer=iam)
def list_holds() -> dict[str, Any]:
    return get_services().holds.listing(parse_holds_query(app.current_request.query_params))


@app.route("/holds/{hold_id}", methods=["GET"], authorizer=iam)
def get_hold(hold_id: str) -> dict[str, Any]:
    return get_services().holds.get(parse_hold_id(hold_id))


@app.route("/holds/{hold_id}/audit", methods=["GET"], authorizer=iam)
def hold_audit_trail(hold_id: str) -> dict[str, Any]:
    page = parse_hold_audit_page(app.current_request.query_params)
    return get_services().holds.audit(parse_hold_id(hold_id), page)


@app.route("/holds/{hold_id}/renew", methods=["POST"], authorizer=iam)
def renew_hold(hold_id: str) -> dict[str, Any]:
    services = get_services()
    ttl = parse_renew(json_body(app.current_request.raw_body, empty_ok=True), services.hold_limits)
    return services.holds.renew(parse_hold_id(hold_id), ttl, _caller())


@app.route("/holds/{hold_id}", methods=["DELETE"], authorizer=iam)
def release_hold(hold_id: str) -> dict[str, Any]:
    return get_services().holds.release(parse_hold_id(hold_id), _caller(), _api_deadline(), _home())


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


def _home() -> AccountRegion | None:
    """This function's account and region (None under chalice local, which has one account)."""
    return account_region_of(getattr(app.lambda_context, "invoked_function_arn", "") or "")


def _caller() -> str:
    """The caller's IAM identity, as API Gateway's IAM authorizer recorded it."""
    identity = (app.current_request.context or {}).get("identity") or {}
    return identity.get("userArn") or identity.get("caller") or "unknown"

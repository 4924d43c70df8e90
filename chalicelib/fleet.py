"""Which state machines sfn-pauser knows: those with a flag mirror, and those with a token folder."""

from chalicelib.arns import AccountRegion, StateMachineArn, parse_state_machine_arn
from chalicelib.errors import InvalidArn
from chalicelib.flag import MaintenanceFlag
from chalicelib.store import TokenStore, UnreadableHeldTask


def known_machines(
    flag: MaintenanceFlag, store: TokenStore, home: AccountRegion | None = None
) -> dict[StateMachineArn, str | None]:
    """Each known machine, with when its mirror was last written (None: no mirror).

    A token folder names only the machine; its ARN comes from a held token
    (new tokens record it), or else from ``home`` (the seed's tokens recorded
    none, and the seed only ever worked in its own account and region).
    """
    machines: dict[StateMachineArn, str | None] = dict(flag.mirrored())
    known_names = {machine.name for machine in machines}
    for name in store.machines():
        if name in known_names:
            continue
        machine = _machine_of_folder(store, name, home)
        if machine is not None:
            machines.setdefault(machine, None)
    return machines


def _machine_of_folder(store: TokenStore, name: str, home: AccountRegion | None) -> StateMachineArn | None:
    first = next(store.held(name), None)
    try:
        task = store.load(first.key) if first else None
    except UnreadableHeldTask:
        task = None
    if task is not None and task.state_machine_arn:
        try:
            return parse_state_machine_arn(task.state_machine_arn)
        except InvalidArn:
            pass
    return home.machine(name) if home else None

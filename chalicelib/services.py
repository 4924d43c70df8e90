"""Wiring: one object graph per configuration, built on first use, with no AWS call."""

import logging
import os
from dataclasses import dataclass

from chalicelib.audit import AuditTrail
from chalicelib.clients import AwsClients
from chalicelib.commands import HoldLimits
from chalicelib.config import Settings
from chalicelib.continuation import Drainer
from chalicelib.flag import MaintenanceFlag
from chalicelib.fleet import Fleet
from chalicelib.hold_control import HoldControl
from chalicelib.holds import Coverage, HoldBook
from chalicelib.logs import DecisionLog, keep_sdk_loggers_above_debug
from chalicelib.maintenance import MaintenanceControl
from chalicelib.metrics import Metrics
from chalicelib.pauser import Pauser
from chalicelib.resumer import Resumer
from chalicelib.sections import Sections
from chalicelib.store import TokenStore
from chalicelib.sweep import Sweeper


@dataclass(frozen=True)
class Services:
    settings: Settings
    clients: AwsClients
    store: TokenStore
    flag: MaintenanceFlag
    resumer: Resumer
    drainer: Drainer
    pauser: Pauser
    control: MaintenanceControl
    holds: HoldControl
    sections: Sections
    sweeper: Sweeper

    @property
    def hold_limits(self) -> HoldLimits:
        return HoldLimits(self.settings.hold_default_ttl_seconds, self.settings.hold_max_ttl_seconds)

    @classmethod
    def build(cls, settings: Settings, logger: logging.Logger, clients: AwsClients | None = None) -> "Services":
        keep_sdk_loggers_above_debug()
        clients = clients or AwsClients(
            max_pool_connections=settings.resume_concurrency,
            send_rate_cap=settings.resume_rate_limit,
        )
        log = DecisionLog(logger)
        metrics = Metrics()
        fleet = Fleet(log, metrics)
        store = TokenStore(clients.s3(), settings.bucket, settings.prefix)
        flag = MaintenanceFlag(clients, store, settings.maintenance_cache_seconds, log=log)
        book = HoldBook(store, settings.maintenance_cache_seconds)
        coverage = Coverage(book, settings.allowed_state_machines)
        sections = Sections(store, clients, log)
        resumer = Resumer(store, clients, log, settings.resume_concurrency, holds=coverage, sections=sections)
        drainer = Drainer(resumer, clients.lambda_, settings.resumer_function, log, metrics)
        audit = AuditTrail(store)
        control = MaintenanceControl(
            flag,
            store,
            drainer,
            resumer,
            audit,
            clients,
            settings.maintenance_cache_seconds,
            settings.allowed_state_machines,
            fleet=fleet,
        )
        holds = HoldControl(book, control, drainer, store, audit, sections)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(
            settings=settings,
            clients=clients,
            store=store,
            flag=flag,
            resumer=resumer,
            drainer=drainer,
            pauser=Pauser(flag, store, drainer, resumer, clients, log, metrics, region, coverage, sections),
            control=control,
            holds=holds,
            sections=sections,
            sweeper=Sweeper(
                flag,
                store,
                drainer,
                control,
                clients,
                log,
                metrics,
                settings.heartbeat_held_tasks,
                fleet=fleet,
                holds=holds,
                sections=sections,
            ),
        )

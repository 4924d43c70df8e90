"""Wiring: one object graph per configuration, built on first use, no AWS call."""

import logging
import os
from dataclasses import dataclass

from chalicelib.clients import AwsClients
from chalicelib.config import Settings
from chalicelib.flag import MaintenanceFlag
from chalicelib.logs import DecisionLog
from chalicelib.maintenance import MaintenanceControl
from chalicelib.pauser import Pauser
from chalicelib.resumer import Resumer
from chalicelib.store import TokenStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    clients: AwsClients
    store: TokenStore
    flag: MaintenanceFlag
    resumer: Resumer
    pauser: Pauser
    control: MaintenanceControl

    @classmethod
    def build(
        cls, settings: Settings, logger: logging.Logger, clients: AwsClients | None = None
    ) -> "Services":
        clients = clients or AwsClients(
            max_pool_connections=settings.resume_concurrency,
            send_rate_cap=settings.resume_rate_limit,
        )
        log = DecisionLog(logger)
        store = TokenStore(clients.s3(), settings.bucket, settings.prefix)
        flag = MaintenanceFlag(clients, settings.maintenance_cache_seconds)
        resumer = Resumer(store, clients, log, settings.resume_concurrency)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(
            settings=settings,
            clients=clients,
            store=store,
            flag=flag,
            resumer=resumer,
            pauser=Pauser(flag, store, resumer, clients, log, region),
            control=MaintenanceControl(flag, store, resumer, clients, settings.maintenance_cache_seconds),
        )

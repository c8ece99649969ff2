"""Realistic CloudStack events: each operation emits what CloudStack emits for it, in
CloudStack's order (action Scheduled, async job submitted, action Started, job updated,
state transitions, usage record, action Completed, job completed), plus an occasional
alert. Bodies are written as Gson writes CloudStack's HashMaps (``as_hashmap``)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from csnotify.events import as_hashmap, gson_dumps

SOURCE = "management-server"
ACCOUNT_UUID = "5e4f1a2b-8c3d-11ee-9a7b-0242ac120002"
USER_UUID = "5e4f3c10-8c3d-11ee-9a7b-0242ac120002"
DOMAIN_UUID = "5e4e8b1a-8c3d-11ee-9a7b-0242ac120002"
ZONE_UUID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
POD_UUID = "0f9e8d7c-6b5a-4c3d-2e1f-a0b9c8d7e6f5"


@dataclass(frozen=True)
class Operation:
    event_type: str
    entity: str  # first-class entity class name, e.g. VirtualMachine
    verb: str  # for descriptions
    old_state: str | None = None
    new_state: str | None = None
    usage: str | None = None  # usage event type, if the operation makes one
    command: str = "org.apache.cloudstack.api.command.user.vm.StartVMCmd"
    # A VM passes through a state of its own: (the request's state-machine event, that
    # state). VirtualMachineManagerImpl.orchestrateStart moves it Stopped -> Starting
    # (StartRequested), then Starting -> Running (OperationSucceeded); advanceStop
    # Running -> Stopping (StopRequested), then Stopping -> Stopped.
    via: tuple[str, str] | None = None

    def transitions(self) -> list[tuple[str, str, str]]:
        """(state-machine event, old state, new state) of each transition, in order."""
        if not self.old_state or not self.new_state:
            return []
        if self.via is None:
            return [("OperationSucceeded", self.old_state, self.new_state)]
        event, between = self.via
        return [(event, self.old_state, between), ("OperationSucceeded", between, self.new_state)]


OPERATIONS = (
    Operation("VM.CREATE", "VirtualMachine", "deploying Vm", "Stopped", "Running", "VM.CREATE",
              "org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
              via=("StartRequested", "Starting")),
    Operation("VM.START", "VirtualMachine", "starting Vm", "Stopped", "Running", "VM.START",
              via=("StartRequested", "Starting")),
    Operation("VM.STOP", "VirtualMachine", "stopping Vm", "Running", "Stopped", "VM.STOP",
              "org.apache.cloudstack.api.command.user.vm.StopVMCmd",
              via=("StopRequested", "Stopping")),
    Operation("VM.REBOOT", "VirtualMachine", "rebooting Vm", "Running", "Running", None,
              "org.apache.cloudstack.api.command.user.vm.RebootVMCmd"),
    Operation("VM.DESTROY", "VirtualMachine", "destroying Vm", "Stopped", "Destroyed", "VM.DESTROY",
              "org.apache.cloudstack.api.command.user.vm.DestroyVMCmd"),
    Operation("VOLUME.CREATE", "Volume", "creating volume", "Allocated", "Ready", "VOLUME.CREATE",
              "org.apache.cloudstack.api.command.user.volume.CreateVolumeCmd"),
    Operation("VOLUME.ATTACH", "Volume", "attaching volume", "Ready", "Ready", None,
              "org.apache.cloudstack.api.command.user.volume.AttachVolumeCmd"),
    Operation("SNAPSHOT.CREATE", "Snapshot", "creating snapshot", "Allocated", "BackedUp",
              "SNAPSHOT.CREATE", "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd"),
    Operation("NETWORK.CREATE", "Network", "creating network", "Allocated", "Implemented",
              "NETWORK.OFFERING.ASSIGN", "org.apache.cloudstack.api.command.user.network.CreateNetworkCmd"),
)  # fmt: skip

ALERTS = (
    ("ALERT.MEMORY", "System Alert: Low Available Memory in cluster cluster1 pod pod1 of availability zone zone1",
     "System memory is low, total: 65536 MB, used: 61440 MB (93.75%)"),
    ("ALERT.STORAGE", "System Alert: Low Available Storage in pod pod1 of availability zone zone1",
     "Available primary storage is low: 92% used"),
    ("ALERT.HOST", "Host is down, name: kvm-03 (id:7), availability zone: zone1, pod: pod1",
     "Host [id:7, name: kvm-03] disconnected"),
)  # fmt: skip

USAGE_CLASSES = {
    "VirtualMachine": "com.cloud.vm.UserVmVO",
    "Volume": "com.cloud.storage.VolumeVO",
    "Snapshot": "com.cloud.storage.SnapshotVO",
    "Network": "com.cloud.network.dao.NetworkVO",
}


@dataclass
class Generated:
    """One event: its bus message (always) and its listEvents row (ActionEvents only)."""

    category: str
    routing_key: str
    body: dict[str, Any]
    list_item: dict[str, Any] | None = None
    seq: int = 0
    text: str | None = None  # replayed: the body's bytes as captured

    @property
    def body_text(self) -> str:
        return self.text if self.text is not None else gson_dumps(as_hashmap(self.body))


def routing_key(
    category: str, kind: str | None, resource_type: str | None, resource_id: str | None
) -> str:
    """CloudStack's five-part key: empty parts become '*', dots within a part '-'."""

    def part(value: str | None) -> str:
        return value.replace(".", "-") if value else "*"

    return ".".join([SOURCE, category, part(kind), part(resource_type), part(resource_id)])


def _bus_time(moment: datetime, zone: tzinfo = UTC) -> str:
    """``eventDateTime``: ``yyyy-MM-dd HH:mm:ss Z`` in the JVM zone (ActionEventUtils)."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


def _api_time(moment: datetime, zone: tzinfo = UTC) -> str:
    """``created``: ``yyyy-MM-dd'T'HH:mm:ssZ`` in the JVM zone (BaseCmd s_outputFormat,
    a SimpleDateFormat with the JVM's default zone)."""
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Generator:
    seed: int | None = None
    failure_rate: float = 0.05
    alert_rate: float = 0.02
    zone: tzinfo = UTC  # the management server's JVM zone
    rng: random.Random = field(init=False)
    seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def events(self, now: Any = None) -> Iterator[Generated]:
        """An endless stream; ``now()`` gives each event's time (default: the clock)."""
        clock = now or (lambda: datetime.now(UTC))
        while True:
            if self.rng.random() < self.alert_rate:
                yield self._alert(clock())
            yield from self._operation(self.rng.choice(OPERATIONS), clock)

    def _next(self, item: Generated) -> Generated:
        self.seq += 1
        item.seq = self.seq
        return item

    def operation(
        self, op: Operation, clock: Any, failed: bool, name: str | None = None
    ) -> Iterator[Generated]:
        """Everything one asynchronous operation publishes, in CloudStack's order:
        ApiServer.queueCommand records the Scheduled ActionEvent, then submits the job
        (framework/jobs AsyncJobManagerImpl.submitAsyncJob publishes ``submit``); the job
        starts (Started), attaches its instance (updateAsyncJobAttachment publishes
        ``update``), moves the state machine (pre- and post-transition of each
        transition), records usage while it runs (UserVmStateListener.
        postStateTransitionEvent publishes a VM's usage event right after the
        post-transition message), then the command returns and ActionEventInterceptor.
        interceptComplete publishes the Completed ActionEvent (``Error while ...`` when it
        failed, interceptException), and completeAsyncJob publishes ``complete`` with the
        job's result. A failure here happens before the state machine moves."""
        resource = self._uuid()
        job = self._uuid()
        name = name or f"{op.entity.lower()[:3]}-{self.rng.randrange(1, 999):03d}"
        scheduled = self._action(op, resource, name, "Scheduled", clock(), None, failed=False)
        yield scheduled
        parent = scheduled.list_item["id"] if scheduled.list_item else None
        yield self._next(self._job("submit", op, resource, job, "IN_PROGRESS", name))
        yield self._action(op, resource, name, "Started", clock(), parent, failed=False)
        yield self._next(self._job("update", op, resource, job, "IN_PROGRESS", name))
        for step in op.transitions() if not failed else ():
            yield self._next(self._state(op, resource, step, "preStateTransitionEvent", clock()))
            yield self._next(self._state(op, resource, step, "postStateTransitionEvent", clock()))
        if op.usage and not failed:
            yield self._next(self._usage(op, resource, clock()))
        yield self._action(op, resource, name, "Completed", clock(), parent, failed=failed)
        yield self._next(
            self._job("complete", op, resource, job, "FAILED" if failed else "SUCCEEDED", name)
        )

    def _operation(self, op: Operation, clock: Any) -> Iterator[Generated]:
        yield from self.operation(op, clock, failed=self.rng.random() < self.failure_rate)

    def _action(
        self, op: Operation, resource: str, name: str, state: str, moment: datetime,
        parent: str | None, failed: bool,
    ) -> Generated:  # fmt: skip
        text = f"{op.verb}. {op.entity} Id: {resource}"
        if state == "Completed":
            text = f"Error while {text}" if failed else f"Successfully completed {text}"
        body = {
            "eventDateTime": _bus_time(moment, self.zone),
            "entityuuid": resource,
            "description": text,
            "event": op.event_type,
            "user": USER_UUID,
            "account": ACCOUNT_UUID,
            "entity": op.entity,
            "status": state,
            op.entity: resource,
        }
        item = {
            "id": self._uuid(),
            "username": "admin",
            "type": op.event_type,
            "level": "ERROR" if failed else "INFO",
            "description": text,
            "account": "admin",
            "domainid": DOMAIN_UUID,
            "domain": "ROOT",
            "domainpath": "/",
            "resourceid": resource,
            "resourcetype": op.entity,
            "resourcename": name,
            "created": _api_time(moment, self.zone),
            "state": state,
        }
        if parent:
            item["parentid"] = parent
        key = routing_key("ActionEvent", op.event_type, op.entity, resource)
        return self._next(Generated("ActionEvent", key, body, item))

    def _state(
        self, op: Operation, resource: str, step: tuple[str, str, str], status: str,
        moment: datetime,
    ) -> Generated:  # fmt: skip
        """One state-machine message. Only the VM listener (UserVmStateListener) adds
        ``status``; the volume, snapshot and network listeners publish the pre- and the
        post-transition message with identical bodies: byte-identical twins."""
        event, old, new = step
        body = {
            "eventDateTime": _bus_time(moment, self.zone),
            "old-state": old,
            "resource": op.entity,
            "id": resource,
            "new-state": new,
        }
        if op.entity == "VirtualMachine":
            body["status"] = status
        return Generated(
            "ResourceStateEvent",
            routing_key("ResourceStateEvent", event, op.entity, resource),
            body,
        )

    def _usage(self, op: Operation, resource: str, moment: datetime) -> Generated:
        cls = USAGE_CLASSES[op.entity]
        body = {
            "eventDateTime": _bus_time(moment, self.zone),
            "zone": ZONE_UUID,
            "resource": cls,
            "id": resource,
            "event": op.usage,
            "account": ACCOUNT_UUID,
        }
        return Generated("UsageEvent", routing_key("UsageEvent", op.usage, cls, resource), body)

    def _job(
        self, phase: str, op: Operation, resource: str, job: str, status: str, name: str = ""
    ) -> Generated:
        body = {
            "jobId": job,
            "commandEventType": op.event_type,
            "processStatus": "0",
            "cmdInfo": {"response": "json", "ctxUserId": "2", "httpmethod": "GET", "id": resource,
                        "ctxAccountId": "2", "uuid": resource, "cmdEventType": op.event_type},
            "instanceType": op.entity,
            "resultCode": "530" if status == "FAILED" else "0",
            "instanceUuid": resource,
            "user": USER_UUID,
            "command": op.command,
            "account": ACCOUNT_UUID,
            "status": status,
        }  # fmt: skip
        if status == "FAILED":
            # the job's ExceptionResponse (ApiAsyncJobDispatcher.runJob)
            why = f"Unable to {op.event_type.rsplit('.', 1)[-1].lower()} {name or resource}"
            body["jobResult"] = {"errorcode": 530, "errortext": f"{why}: host kvm-03 is down"}
        elif status == "SUCCEEDED":
            body["jobResult"] = {op.entity.lower(): {"id": resource}}
        return Generated(
            "AsyncJobEvent", routing_key("AsyncJobEvent", phase, op.entity, resource), body
        )

    def _alert(self, moment: datetime) -> Generated:
        kind, subject, text = self.rng.choice(ALERTS)
        text = f"{text} (check {self.rng.randrange(1, 10**6)})"
        body = {
            "eventDateTime": _bus_time(moment, self.zone),
            "subject": subject,
            "dataCenterId": ZONE_UUID,
            "event": kind,
            "body": text,
            "podId": POD_UUID,
        }
        return self._next(
            Generated("AlertEvent", routing_key("AlertEvent", kind, None, None), body)
        )

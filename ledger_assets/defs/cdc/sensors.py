"""The CDC sensor: read the slot, land batches durably, and ask for one apply run per tick."""

import dagster as dg

from ledger_assets.defs.lake.jobs import lake_apply_job, lake_seed_job
from ledger_assets.defs.resources import LakeResource, PostgresResource, SensorWaitResource
from ledger_assets.defs.runs import TICK_EVERY_DAEMON_PASS, waiting_run
from ledger_assets.lib.cdc import CaptureBusyError, CaptureConfig, ChangeCapture, Lsn
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.sync import read_lake_state
from ledger_assets.lib.polling import poll

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    name="lake_seed_sensor",
    description="Seed the lake (slot first, then a snapshot) when it has never been seeded.",
    # By name: a job object here makes Dagster re-create the sensor to bind resources, which
    # trips a beta warning inside Dagster 1.13 (SensorDefinition owners=[]).
    job_name=lake_seed_job.name,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lake_seed_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource
) -> dg.RunRequest | dg.SkipReason:
    if read_lake_state(lake.layout).applied_end is not None:
        return dg.SkipReason("the lake is seeded")
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=lake_seed_job.name, statuses=_ACTIVE), limit=1
    )
    if running:
        return dg.SkipReason("the lake is being seeded")
    # No run key: a failed seed must be retried on a later tick, not deduplicated away.
    return dg.RunRequest(tags={"ledger/trigger": "lake_seed"})


def capture_new_changes(
    config: CaptureConfig, postgres: PostgresResource, past: Lsn, wait: SensorWaitResource
) -> Lsn | None:
    """Land committed changes and return the change log's end once it is past ``past``.

    Captures once at once; after that, for up to ``wait.seconds``, it captures again each time
    Postgres has flushed more WAL (a one-row query per poll) — a commit is landed within a poll
    of reaching the WAL instead of waiting for the next tick. The capture lock is held for each
    capture only, so a reconciliation cycle can capture between polls. None: nothing new.

    Raises:
        CaptureBusyError: another process holds the capture lock.
    """
    with postgres.connect() as conn:
        flushed_seen: Lsn | None = None

        def landed_past() -> Lsn | None:
            nonlocal flushed_seen
            flushed = slots.current_flush_lsn(conn)
            if flushed == flushed_seen:
                return None
            flushed_seen = flushed
            with ChangeCapture(config) as capture:
                capture.start()
                capture.capture_batch()
                landed = capture.state.landed
            return landed if landed > past else None

        return poll(landed_past, seconds=wait.seconds, every=wait.poll_seconds)


@dg.sensor(
    name="cdc_capture_sensor",
    description="Capture committed changes from the logical slot into the change log, then "
    "request a lake apply run for the newly landed LSN range.",
    job_name=lake_apply_job.name,
    # Every pass of Dagster's sensor daemon (one per 5 s, its floor; TICK_EVERY_DAEMON_PASS),
    # and each tick watches the WAL for most of the pass (SensorWaitResource): a commit is
    # landed and its apply run requested within a poll, not at the next pass.
    minimum_interval_seconds=TICK_EVERY_DAEMON_PASS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def cdc_capture_sensor(
    context: dg.SensorEvaluationContext,
    postgres: PostgresResource,
    lake: LakeResource,
    sensor_wait: SensorWaitResource,
) -> dg.RunRequest | dg.SkipReason:
    lake_state = read_lake_state(lake.layout)
    if lake_state.applied_end is None:
        return dg.SkipReason("the lake is not seeded yet (lake_seed_sensor)")
    # Capture is bounded (config.max_seconds per batch, one batch per capture): a tick never
    # runs into the sensor timeout, and a backlog drains over consecutive ticks.
    try:
        landed = capture_new_changes(
            lake.capture_config(postgres.dsn), postgres, lake_state.applied_end, sensor_wait
        )
    except CaptureBusyError:
        # A reconciliation cycle (or a seed) is capturing up to its snapshot right now; what it
        # lands is applied from the next tick on, so nothing waits longer than one tick.
        return dg.SkipReason("another process holds the capture lock; next tick")
    if landed is None:
        return dg.SkipReason(f"no new changes; the lake is at {lake_state.applied_end}")
    waiting = waiting_run(context.instance, lake_apply_job.name)
    if waiting is not None:
        # An apply run that has not started applies everything landed when it starts.
        return dg.SkipReason(f"apply run {waiting.run_id} is waiting to start; it takes these")
    # The run key names the LSN range: a replayed tick is deduplicated, new changes never are.
    return dg.RunRequest(
        run_key=f"cdc-{lake_state.applied_end.hex16}-{landed.hex16}",
        tags={
            "ledger/trigger": "cdc",
            "ledger/lsn_from": str(lake_state.applied_end),
            "ledger/lsn_to": str(landed),
        },
    )

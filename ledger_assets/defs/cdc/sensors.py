"""The CDC sensor: read the slot, land batches durably, and ask for one apply run per tick."""

import dagster as dg

from ledger_assets.defs.lake.jobs import lake_apply_job, lake_seed_job
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.defs.runs import TICK_EVERY_DAEMON_PASS, waiting_run
from ledger_assets.lib.cdc import CaptureBusyError, ChangeCapture
from ledger_assets.lib.cdc.state import read_state
from ledger_assets.lib.lake.sync import read_lake_state

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


@dg.sensor(
    name="cdc_capture_sensor",
    description="Capture committed changes from the logical slot into the change log, then "
    "request a lake apply run for the newly landed LSN range.",
    job_name=lake_apply_job.name,
    # Every pass of Dagster's sensor daemon (one per 5 s, its floor; TICK_EVERY_DAEMON_PASS):
    # a change waits 2.5 s on average for its tick. A tick with nothing landed is a slot peek.
    minimum_interval_seconds=TICK_EVERY_DAEMON_PASS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def cdc_capture_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, lake: LakeResource
) -> dg.RunRequest | dg.SkipReason:
    lake_state = read_lake_state(lake.layout)
    if lake_state.applied_end is None:
        return dg.SkipReason("the lake is not seeded yet (lake_seed_sensor)")
    config = lake.capture_config(postgres.dsn)
    # Capture is bounded (config.max_seconds per batch, one batch per tick): a tick never runs
    # into the sensor timeout, and a backlog drains over consecutive ticks.
    try:
        with ChangeCapture(config) as capture:
            capture.start()
            capture.capture_batch()
    except CaptureBusyError:
        # A reconciliation cycle (or a seed) is capturing up to its snapshot right now; what it
        # lands is applied from the next tick on, so nothing waits longer than one tick.
        return dg.SkipReason("another process holds the capture lock; next tick")
    capture_state = read_state(config.changelog_dir)
    assert capture_state is not None
    landed = capture_state.landed
    if landed <= lake_state.applied_end:
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

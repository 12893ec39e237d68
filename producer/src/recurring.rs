//! Recurring schedules: a cron expression and a job template of one tenant, kept in Postgres.
//! Every producer runs [`run_ticks`]: once a second it takes the schedules that are due (row
//! lock, `SKIP LOCKED`, so each is handled by one replica at a time), publishes the tick's job
//! and moves `next_tick` on in the same transaction. The tick's job id derives from the
//! schedule's name and the tick's time, so a tick published twice (a producer that died
//! between its publish and its commit) is the same job, deduplicated like any resubmission.
use std::time::Duration;

use codigo_common::shutdown::{self, Shutdown};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::events::ScheduleTicked;
use crate::ingest::{Ingest, JobRequest};

/// How often due schedules are looked for: a tick's job is published at most this late.
const POLL: Duration = Duration::from_secs(1);
/// Due schedules taken per round.
const ROUND_ROWS: i64 = 100;
/// A tick handled later than this after its time was missed (every producer was down): it
/// runs only if its schedule says `catch_up`.
pub const MISSED_AFTER: time::Duration = time::Duration::minutes(1);
/// Ticks stepped over, at most, to find the latest one due after a long downtime.
const MAX_STEPS: usize = 100_000;
/// Longest schedule name.
const MAX_NAME_LEN: usize = 128;

/// A schedule as `PUT /v1/schedules/{name}` takes it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five fields: minute, hour, day of month, month, day of week (`*/15 * * * *`).
    #[schema(example = "0 6 * * MON-FRI")]
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[serde(default = "utc")]
    #[schema(example = "Europe/Madrid")]
    pub timezone: String,
    /// Whether a tick missed while no producer ran still runs (once) on return.
    #[serde(default = "yes")]
    pub catch_up: bool,
    /// The job each tick submits.
    pub job: JobTemplate,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn yes() -> bool {
    true
}

/// The job of every tick.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTemplate {
    #[serde(rename = "type")]
    pub job_type: String,
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// A stored schedule, as the API answers it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: bool,
    #[schema(value_type = JobTemplate)]
    pub job: sqlx::types::Json<Value>,
    /// The next tick not yet turned into a job.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_tick: OffsetDateTime,
    /// The last tick that submitted a job, and that job.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_tick: Option<OffsetDateTime>,
    pub last_job_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// A cron expression read in its time zone.
#[derive(Debug)]
pub struct Cron(cronexpr::Crontab);

impl Cron {
    /// Checks a five-field expression and an IANA zone; the error says what to send instead.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "cron must have 5 fields (minute hour day-of-month month day-of-week), \
                 {expression:?} has {fields}"
            ));
        }
        if timezone.split_whitespace().count() != 1 || jiff::tz::TimeZone::get(timezone).is_err() {
            return Err(format!(
                "unknown time zone {timezone:?}; use an IANA name such as UTC or Europe/Madrid"
            ));
        }
        cronexpr::parse_crontab(&format!("{expression} {timezone}"))
            .map(Self)
            .map_err(|e| {
                let reason = e.to_string().replace('\n', " ");
                format!("cron {expression:?} cannot be read: {reason}")
            })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: OffsetDateTime) -> Result<OffsetDateTime, String> {
        let timestamp = jiff::Timestamp::from_nanosecond(after.unix_timestamp_nanos())
            .map_err(|e| e.to_string())?;
        let next = self.0.find_next(timestamp).map_err(|e| e.to_string())?;
        OffsetDateTime::from_unix_timestamp_nanos(next.timestamp().as_nanosecond())
            .map_err(|e| e.to_string())
    }
}

/// What a due schedule comes to at `now`: the tick to submit a job for, if any, and the next
/// tick to wait for.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    pub run: Option<OffsetDateTime>,
    pub next: OffsetDateTime,
}

/// Of the ticks from `next_tick` to `now`, only the latest runs, once: on time, or missed
/// with `catch_up`. Missed ticks before it are not run one by one.
pub fn due(
    cron: &Cron,
    next_tick: OffsetDateTime,
    catch_up: bool,
    now: OffsetDateTime,
) -> Result<Due, String> {
    let mut latest = next_tick;
    let mut following = cron.next_after(latest)?;
    let mut steps = 0;
    while following <= now {
        steps += 1;
        if steps > MAX_STEPS {
            // Down for very long with very frequent ticks: run the one reached, go on from now.
            following = cron.next_after(now)?;
            break;
        }
        latest = following;
        following = cron.next_after(latest)?;
    }
    let on_time = now - latest <= MISSED_AFTER;
    Ok(Due {
        run: (on_time || catch_up).then_some(latest),
        next: following,
    })
}

/// The idempotency key of a tick's job: with the tenant and the type, it makes the job's id.
pub fn tick_key(name: &str, tick: OffsetDateTime) -> String {
    let at = tick
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default();
    format!("schedule:{name}@{at}")
}

/// A schedule name: 1 to 128 letters, digits, `.`, `_` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "schedule name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'"
        ))
    }
}

const COLUMNS: &str = "name, cron, timezone, catch_up, job, next_tick, last_tick, last_job_id, \
                       created_at, updated_at";

/// Creates or replaces a schedule; its next tick is the first after now.
pub async fn put(
    pool: &PgPool,
    tenant: &str,
    name: &str,
    spec: &ScheduleSpec,
    next_tick: OffsetDateTime,
) -> Result<Schedule, sqlx::Error> {
    let job = serde_json::to_value(&spec.job).unwrap_or(Value::Null);
    sqlx::query_as(&format!(
        "INSERT INTO schedules (tenant, name, cron, timezone, catch_up, job, next_tick)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant, name) DO UPDATE SET
             cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, catch_up = EXCLUDED.catch_up,
             job = EXCLUDED.job, next_tick = EXCLUDED.next_tick, updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(name)
    .bind(&spec.cron)
    .bind(&spec.timezone)
    .bind(spec.catch_up)
    .bind(job)
    .bind(next_tick)
    .fetch_one(pool)
    .await
}

pub async fn list(pool: &PgPool, tenant: &str) -> Result<Vec<Schedule>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant = $1 ORDER BY name"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, tenant: &str, name: &str) -> Result<Option<Schedule>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant = $1 AND name = $2"
    ))
    .bind(tenant)
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// `true` when there was such a schedule.
pub async fn delete(pool: &PgPool, tenant: &str, name: &str) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM schedules WHERE tenant = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

#[derive(sqlx::FromRow)]
struct DueRow {
    tenant: String,
    name: String,
    cron: String,
    timezone: String,
    catch_up: bool,
    job: sqlx::types::Json<JobTemplate>,
    next_tick: OffsetDateTime,
}

/// What handling one due schedule came to.
enum Handled {
    /// Move on to `next`, having submitted `job` for `tick` (or skipped a missed tick).
    Advance {
        next: OffsetDateTime,
        submitted: Option<(OffsetDateTime, Uuid)>,
    },
    /// JetStream did not take the job: the same tick is tried again next round.
    Again,
}

/// Publishes the jobs of due schedules until `shutdown`.
pub async fn run_ticks(pool: PgPool, ingest: Ingest, shutdown: Shutdown) {
    ScheduleTicked::register();
    let failing = "cannot read the due schedules; trying again in a second";
    shutdown::every(&shutdown, POLL, failing, || round(&pool, &ingest)).await;
}

/// One round: the due schedules taken, their jobs published, their next ticks stored.
async fn round(pool: &PgPool, ingest: &Ingest) -> Result<(), sqlx::Error> {
    let now = OffsetDateTime::now_utc();
    let mut tx = pool.begin().await?;
    let due_rows: Vec<DueRow> = sqlx::query_as(
        "SELECT tenant, name, cron, timezone, catch_up, job, next_tick
           FROM schedules WHERE next_tick <= $1
          ORDER BY next_tick LIMIT $2
            FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(ROUND_ROWS)
    .fetch_all(&mut *tx)
    .await?;
    if due_rows.is_empty() {
        return tx.commit().await;
    }
    for row in &due_rows {
        let Handled::Advance { next, submitted } = handle(ingest, row, now).await else {
            continue;
        };
        sqlx::query(
            "UPDATE schedules SET next_tick = $3,
                    last_tick = COALESCE($4, last_tick), last_job_id = COALESCE($5, last_job_id)
              WHERE tenant = $1 AND name = $2",
        )
        .bind(&row.tenant)
        .bind(&row.name)
        .bind(next)
        .bind(submitted.map(|(tick, _)| tick))
        .bind(submitted.map(|(_, id)| id))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

async fn handle(ingest: &Ingest, row: &DueRow, now: OffsetDateTime) -> Handled {
    let ticked = |result: &'static str| ScheduleTicked {
        tenant: &row.tenant,
        name: &row.name,
        result,
    };
    let due = Cron::parse(&row.cron, &row.timezone).and_then(|cron| {
        let due = due(&cron, row.next_tick, row.catch_up, now)?;
        Ok(due)
    });
    let due = match due {
        Ok(due) => due,
        Err(reason) => {
            // Stored only after the same checks: a time-zone database that lost the zone.
            ticked("invalid").emit(&reason);
            return Handled::Advance {
                next: now + time::Duration::days(1),
                submitted: None,
            };
        }
    };
    let Some(tick) = due.run else {
        ticked("skipped").emit("missed while no producer ran, and catch_up is false");
        return Handled::Advance {
            next: due.next,
            submitted: None,
        };
    };
    let request = JobRequest::now(
        row.job.job_type.clone(),
        row.job.payload.clone(),
        Some(tick_key(&row.name, tick)),
    );
    let job = match ingest.check_for_tenant(request, "/job/payload") {
        Ok(job) => job,
        Err(problem) => {
            // The type was deleted or its schema changed since: this tick cannot run.
            ticked("invalid").emit(&problem.detail);
            return Handled::Advance {
                next: due.next,
                submitted: None,
            };
        }
    };
    match ingest.publish_for(&row.tenant, job).await {
        Ok(accepted) => {
            ticked("published").emit("");
            Handled::Advance {
                next: due.next,
                submitted: Some((tick, accepted.id)),
            }
        }
        Err(problem) => {
            ticked("error").emit(&problem.detail);
            Handled::Again
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn expressions_are_read_in_their_time_zone() {
        let cron = Cron::parse("30 9 * * *", "Europe/Madrid").expect("valid");
        // 09:30 in Madrid is 08:30 UTC in winter, 07:30 UTC in summer.
        assert_eq!(
            cron.next_after(datetime!(2026-12-07 12:00 UTC)).unwrap(),
            datetime!(2026-12-08 08:30 UTC)
        );
        assert_eq!(
            cron.next_after(datetime!(2026-07-01 00:00 UTC)).unwrap(),
            datetime!(2026-07-01 07:30 UTC)
        );
        let every_15 = Cron::parse("*/15 * * * *", "UTC").expect("valid");
        assert_eq!(
            every_15
                .next_after(datetime!(2026-12-07 12:00 UTC))
                .unwrap(),
            datetime!(2026-12-07 12:15 UTC),
            "strictly after"
        );
    }

    #[test]
    fn refusals_say_what_to_send() {
        let six = Cron::parse("0 0 * * * *", "UTC").unwrap_err();
        assert!(six.contains("5 fields"), "{six}");
        let zone = Cron::parse("0 0 * * *", "Mars/Olympus").unwrap_err();
        assert!(zone.contains("IANA"), "{zone}");
        let injected = Cron::parse("0 0 * * *", "UTC UTC").unwrap_err();
        assert!(injected.contains("time zone"), "{injected}");
        let field = Cron::parse("61 * * * *", "UTC").unwrap_err();
        assert!(field.contains("cannot be read"), "{field}");
        assert!(check_name("nightly-report.v2").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_latest_due_tick_runs_and_a_missed_one_only_with_catch_up() {
        let hourly = Cron::parse("0 * * * *", "UTC").unwrap();
        let next_tick = datetime!(2026-12-07 10:00 UTC);
        // On time.
        let now = datetime!(2026-12-07 10:00:01 UTC);
        for catch_up in [true, false] {
            assert_eq!(
                due(&hourly, next_tick, catch_up, now).unwrap(),
                Due {
                    run: Some(next_tick),
                    next: datetime!(2026-12-07 11:00 UTC)
                }
            );
        }
        // Down from 09:59 to 13:20: the 10, 11, 12 and 13 o'clock ticks were missed; one job,
        // for 13:00, with catch_up; none without.
        let now = datetime!(2026-12-07 13:20 UTC);
        assert_eq!(
            due(&hourly, next_tick, true, now).unwrap(),
            Due {
                run: Some(datetime!(2026-12-07 13:00 UTC)),
                next: datetime!(2026-12-07 14:00 UTC)
            }
        );
        assert_eq!(
            due(&hourly, next_tick, false, now).unwrap(),
            Due {
                run: None,
                next: datetime!(2026-12-07 14:00 UTC)
            }
        );
    }

    #[test]
    fn a_tick_has_one_key_whatever_the_offset_it_is_written_in() {
        let utc = datetime!(2026-12-07 10:00 UTC);
        let madrid = utc.to_offset(time::macros::offset!(+1));
        assert_eq!(tick_key("nightly", utc), tick_key("nightly", madrid));
        assert_eq!(
            tick_key("nightly", utc),
            "schedule:nightly@2026-12-07T10:00:00Z"
        );
        assert_ne!(tick_key("nightly", utc), tick_key("hourly", utc));
    }
}

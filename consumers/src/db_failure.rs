//! How the consumer judges a database error: by its SQLSTATE, as the job's fault, a
//! passing condition or a broken deployment.
/// What a database error means for the jobs that met it, judged by its SQLSTATE (or, for
/// errors that never reached Postgres, by what failed). Every place that judges a database
/// error goes through [`DbFailure::from`].
#[derive(Debug, thiserror::Error)]
pub enum DbFailure {
    /// Goes away by itself (connection trouble, serialization failure or deadlock, resources,
    /// operator intervention, a failover): hold the jobs and try again.
    #[error("Postgres unavailable{}: {source}", sqlstate_suffix(.sqlstate.as_deref()))]
    Transient {
        sqlstate: Option<String>,
        source: sqlx::Error,
    },
    /// The deployment is broken (missing privileges, a table or column that is not there, a
    /// database or schema that does not exist): no job can succeed until an operator fixes it.
    /// Hold the jobs, never dead-letter them, and raise the alert.
    #[error(
        "the database refuses the consumer's own statements{}: {source}; check the consumer \
         role's grants and that migrations ran (codigo-ctl setup), then the held jobs resume",
        sqlstate_suffix(.sqlstate.as_deref())
    )]
    Deployment {
        sqlstate: Option<String>,
        source: sqlx::Error,
    },
    /// Postgres refuses this job's data (class 22, a constraint): permanent for this job only.
    #[error("Postgres refused the job's writes{}: {source}", sqlstate_suffix(.sqlstate.as_deref()))]
    Job {
        sqlstate: Option<String>,
        source: sqlx::Error,
    },
}

fn sqlstate_suffix(sqlstate: Option<&str>) -> String {
    sqlstate.map_or_else(String::new, |code| format!(" (SQLSTATE {code})"))
}

/// The three ways a database error can be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorClass {
    Transient,
    Deployment,
    Job,
}

impl DbErrorClass {
    pub const ALL: [DbErrorClass; 3] = [Self::Transient, Self::Deployment, Self::Job];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Deployment => "deployment",
            Self::Job => "job",
        }
    }

    /// Judges a SQLSTATE.
    pub fn of_sqlstate(code: &str) -> Self {
        let class = code.get(..2).unwrap_or_default();
        match (class, code) {
            // 08 connection, 40 serialization failure / deadlock, 53 insufficient resources,
            // 57 operator intervention (admin shutdown, query cancelled), 58 system error;
            // states of the database rather than of the job: 25006 read-only (a failover in
            // progress), 55P03 lock not available, 55000 object not in prerequisite state.
            ("08" | "40" | "53" | "57" | "58", _) | (_, "25006" | "55P03" | "55000") => {
                Self::Transient
            }
            // 42 syntax or access rule (42501 insufficient privilege, 42P01 undefined table,
            // 42703 undefined column, ...): our statements are fixed, so no job's data causes
            // them. 28 bad credentials, 3D000 no such database, 3F000 no such schema.
            ("42" | "28", _) | (_, "3D000" | "3F000") => Self::Deployment,
            // 22 data exception, 23 integrity constraint and everything else: this job.
            _ => Self::Job,
        }
    }

    /// Judges an error that may not carry a SQLSTATE.
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(db) => db
                .code()
                .map_or(Self::Job, |code| Self::of_sqlstate(code.as_ref())),
            // The connection or the pool failed, not the statement.
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Transient,
            // Rows that do not match what the code expects: schema and code disagree.
            sqlx::Error::Configuration(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::RowNotFound
            | sqlx::Error::Decode(_) => Self::Deployment,
            _ => Self::Job,
        }
    }
}

impl From<sqlx::Error> for DbFailure {
    fn from(source: sqlx::Error) -> Self {
        let sqlstate = match &source {
            sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
            _ => None,
        };
        match DbErrorClass::of(&source) {
            DbErrorClass::Transient => Self::Transient { sqlstate, source },
            DbErrorClass::Deployment => Self::Deployment { sqlstate, source },
            DbErrorClass::Job => Self::Job { sqlstate, source },
        }
    }
}

impl DbFailure {
    pub fn class(&self) -> DbErrorClass {
        match self {
            Self::Transient { .. } => DbErrorClass::Transient,
            Self::Deployment { .. } => DbErrorClass::Deployment,
            Self::Job { .. } => DbErrorClass::Job,
        }
    }

    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Transient { sqlstate, .. }
            | Self::Deployment { sqlstate, .. }
            | Self::Job { sqlstate, .. } => sqlstate.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_judged_by_class() {
        for (code, class) in [
            ("08006", DbErrorClass::Transient),
            ("08P01", DbErrorClass::Transient),
            ("40001", DbErrorClass::Transient),
            ("40P01", DbErrorClass::Transient),
            ("53300", DbErrorClass::Transient),
            ("53100", DbErrorClass::Transient),
            ("57P01", DbErrorClass::Transient),
            ("57014", DbErrorClass::Transient),
            ("25006", DbErrorClass::Transient),
            ("55P03", DbErrorClass::Transient),
            ("42501", DbErrorClass::Deployment),
            ("42P01", DbErrorClass::Deployment),
            ("42703", DbErrorClass::Deployment),
            ("28P01", DbErrorClass::Deployment),
            ("3D000", DbErrorClass::Deployment),
            ("22003", DbErrorClass::Job),
            ("22P05", DbErrorClass::Job),
            ("23505", DbErrorClass::Job),
            ("", DbErrorClass::Job),
        ] {
            assert_eq!(DbErrorClass::of_sqlstate(code), class, "{code}");
        }
    }

    #[test]
    fn errors_outside_postgres_are_judged_by_what_failed() {
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::PoolTimedOut),
            DbErrorClass::Transient
        );
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::PoolClosed),
            DbErrorClass::Transient
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::Io(io)),
            DbErrorClass::Transient
        );
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::ColumnNotFound("status".into())),
            DbErrorClass::Deployment
        );
    }
}

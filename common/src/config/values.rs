//! clap value parsers for settings: durations with units and bounded numbers. Their errors
//! name the setting (environment variable and flag), the value and what is allowed, so a bad
//! setting stops the binary at start with a message saying what to change.
use std::ffi::OsStr;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command};

/// A setting's value refused: `what` says what the setting allows.
fn refuse(cmd: &Command, arg: Option<&Arg>, value: &str, what: &str) -> clap::Error {
    let setting = match (
        arg.and_then(Arg::get_env).map(OsStr::to_string_lossy),
        arg.and_then(Arg::get_long),
    ) {
        (Some(env), Some(long)) => format!("{env} (--{long})"),
        (Some(env), None) => env.into_owned(),
        (None, Some(long)) => format!("--{long}"),
        (None, None) => "a setting".to_owned(),
    };
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("invalid value {value:?} for {setting}: {what}\n"),
    )
    .format(&mut cmd.clone())
}

fn text<'a>(cmd: &Command, arg: Option<&Arg>, value: &'a OsStr) -> Result<&'a str, clap::Error> {
    value
        .to_str()
        .ok_or_else(|| refuse(cmd, arg, &value.to_string_lossy(), "not UTF-8"))
}

/// A duration: a plain number counts in the setting's own unit (`30` is 30 s for a `_SECS`
/// setting, as it always was), anything else is a humantime duration (`30s`, `500ms`, `2m`,
/// `1h 30m`, `14d`). Build one with [`secs`], [`millis`] or [`days`].
#[derive(Debug, Clone, Copy)]
pub struct DurationValue {
    unit: Duration,
    unit_name: &'static str,
    min: Duration,
    max: Duration,
}

/// A `_SECS` setting: `30` is 30 seconds.
pub const fn secs() -> DurationValue {
    DurationValue::new(Duration::from_secs(1), "seconds")
}

/// A `_MS` setting: `500` is 500 milliseconds.
pub const fn millis() -> DurationValue {
    DurationValue::new(Duration::from_millis(1), "milliseconds")
}

/// A `_DAYS` setting: `14` is 14 days.
pub const fn days() -> DurationValue {
    DurationValue::new(Duration::from_secs(86_400), "days")
}

impl DurationValue {
    const fn new(unit: Duration, unit_name: &'static str) -> Self {
        Self {
            unit,
            unit_name,
            min: Duration::ZERO,
            max: Duration::MAX,
        }
    }

    #[must_use]
    pub const fn at_least(mut self, min: Duration) -> Self {
        self.min = min;
        self
    }

    #[must_use]
    pub const fn at_most(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The duration `raw` stands for, or what is wrong with it.
    pub fn parse(&self, raw: &str) -> Result<Duration, String> {
        let raw = raw.trim();
        let duration = match raw.parse::<u64>() {
            Ok(count) => u32::try_from(count)
                .ok()
                .and_then(|count| self.unit.checked_mul(count))
                .ok_or_else(|| format!("{count} {} is too long", self.unit_name))?,
            Err(_) => humantime::parse_duration(raw).map_err(|error| {
                format!(
                    "{error}; use a number of {} or a duration with units (500ms, 30s, 2m, 1h)",
                    self.unit_name
                )
            })?,
        };
        if duration < self.min || duration > self.max {
            return Err(self.allowed());
        }
        Ok(duration)
    }

    fn allowed(&self) -> String {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        match (self.min.is_zero(), self.max == Duration::MAX) {
            (true, true) => "any duration".to_owned(),
            (false, true) => format!("must be at least {}", show(self.min)),
            (true, false) => format!("must be at most {}", show(self.max)),
            (false, false) => format!("must be from {} to {}", show(self.min), show(self.max)),
        }
    }
}

impl TypedValueParser for DurationValue {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let raw = text(cmd, arg, value)?;
        self.parse(raw).map_err(|what| refuse(cmd, arg, raw, &what))
    }
}

/// A whole number within `min..=max`. Build one with [`at_least`].
#[derive(Debug, Clone, Copy)]
pub struct Bounded<T> {
    min: T,
    max: Option<T>,
}

/// A number setting that must be at least `min`.
pub const fn at_least<T>(min: T) -> Bounded<T> {
    Bounded { min, max: None }
}

impl<T> Bounded<T> {
    #[must_use]
    pub fn at_most(self, max: T) -> Self {
        Self {
            max: Some(max),
            ..self
        }
    }
}

impl<T> Bounded<T>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    pub fn parse(&self, raw: &str) -> Result<T, String> {
        let allowed = || match self.max {
            Some(max) => format!("must be a whole number from {} to {max}", self.min),
            None => format!("must be a whole number, at least {}", self.min),
        };
        match raw.trim().parse::<T>() {
            Ok(n) if n >= self.min && self.max.is_none_or(|max| n <= max) => Ok(n),
            _ => Err(allowed()),
        }
    }
}

impl<T> TypedValueParser for Bounded<T>
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let raw = text(cmd, arg, value)?;
        self.parse(raw).map_err(|what| refuse(cmd, arg, raw, &what))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Settings {
        #[arg(long, env = "TEST_WAIT_SECS", default_value = "30s",
              value_parser = secs().at_least(Duration::from_millis(1)))]
        wait_secs: Duration,
        #[arg(long, default_value = "2000", value_parser = millis())]
        attempt_ms: Duration,
        #[arg(long, value_delimiter = ',', default_value = "30,1m", value_parser = secs())]
        steps_secs: Vec<Duration>,
        #[arg(long, env = "TEST_WORKERS", default_value_t = 4,
              value_parser = at_least(1usize).at_most(64))]
        workers: usize,
    }

    /// Parses a command line written as one string (no argument here holds a space).
    fn parse(command_line: &str) -> Result<Settings, clap::Error> {
        Settings::try_parse_from(std::iter::once("test").chain(command_line.split_whitespace()))
    }

    #[test]
    fn plain_numbers_keep_their_unit_and_units_are_accepted() {
        let (s, ms) = (Duration::from_secs, Duration::from_millis);
        for (command_line, expected) in [
            ("", (s(30), s(2), vec![s(30), s(60)])),
            (
                "--wait-secs 45 --attempt-ms 1.5s --steps-secs 500ms,2",
                (s(45), ms(1500), vec![ms(500), s(2)]),
            ),
        ] {
            let set = parse(command_line).expect(command_line);
            let got = (set.wait_secs, set.attempt_ms, set.steps_secs);
            assert_eq!(got, expected, "{command_line:?}");
        }
        assert_eq!(days().parse("14"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(days().parse("12h"), Ok(Duration::from_secs(12 * 3600)));
    }

    #[test]
    fn errors_name_the_setting_and_what_it_allows() {
        for (args, expected) in [
            (
                ["--wait-secs", "0"],
                "TEST_WAIT_SECS (--wait-secs): must be at least 1ms",
            ),
            (
                ["--wait-secs", "soon"],
                "TEST_WAIT_SECS (--wait-secs): expected number",
            ),
            (
                ["--workers", "0"],
                "TEST_WORKERS (--workers): must be a whole number from 1 to 64",
            ),
            (
                ["--workers", "65"],
                "TEST_WORKERS (--workers): must be a whole number from 1 to 64",
            ),
            (["--steps-secs", "1,x"], "--steps-secs: "),
        ] {
            let error = parse(&args.join(" ")).expect_err(args[1]);
            assert_eq!(error.kind(), ErrorKind::ValueValidation);
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
        }
        assert!(secs().parse("99999999999").is_err());
    }
}

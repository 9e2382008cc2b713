//! Scalar values as people write them in YAML: durations (`30`, `"1s"`,
//! `"500ms"`), sizes (`104857600`, `"100M"`), `enabled: development`, and
//! php.ini settings of any scalar type.

use std::time::Duration;

use serde::Deserialize;

/// A duration: a bare number is seconds (as the original `request_timeout: 30`),
/// a string may carry a unit: `ms`, `s`, `m`, `h`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    pub(crate) fn get(&self) -> Result<Duration, String> {
        match self {
            Self::Seconds(s) => Ok(Duration::from_secs(*s)),
            Self::Text(t) => parse_duration(t),
        }
    }
}

pub(crate) fn parse_duration(t: &str) -> Result<Duration, String> {
    let t = t.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("{t:?} is not a duration; write 30, \"30s\", \"500ms\", \"2m\", \"1h\" or \"30d\"")
    })?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {t:?}; use ms, s, m, h or d"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=365.0 * 86400.0).contains(&secs) {
        return Err(format!("{t:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A byte size: a number of bytes, or `"10K"`, `"100M"`, `"1G"` (binary
/// multiples, as PHP reads `upload_max_filesize`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    pub(crate) fn get(&self) -> Result<u64, String> {
        match self {
            Self::Bytes(b) => Ok(*b),
            Self::Text(t) => {
                let t = t.trim();
                let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
                    Some('K') => (&t[..t.len() - 1], 1u64 << 10),
                    Some('M') => (&t[..t.len() - 1], 1 << 20),
                    Some('G') => (&t[..t.len() - 1], 1 << 30),
                    _ => (t, 1),
                };
                num.trim()
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(mult))
                    .ok_or_else(|| format!("{t:?} is not a size; write a number of bytes or \"10K\", \"100M\", \"1G\""))
            }
        }
    }
}

/// `enabled: true | false | development` (also `"true"`, `"false"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum EnabledValue {
    Flag(bool),
    Text(String),
}

impl EnabledValue {
    /// Whether the worker runs in this mode.
    pub(crate) fn get(&self, dev: bool) -> Result<bool, String> {
        match self {
            Self::Flag(b) => Ok(*b),
            Self::Text(t) if t == "development" || t == "dev" => Ok(dev),
            // The Go TQServer reads `enabled` as a string: "true" and
            // "false" quoted mean what they say.
            Self::Text(t) if t == "true" => Ok(true),
            Self::Text(t) if t == "false" => Ok(false),
            Self::Text(t) => Err(format!(
                "{t:?} is not valid; use true, false or development (enabled in dev mode only)"
            )),
        }
    }
}

/// A php.ini value from any YAML scalar.
pub(crate) fn ini_value(v: &serde_yaml_ng::Value) -> Result<String, String> {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "1" } else { "0" }.to_string()),
        Value::Null => Ok(String::new()),
        _ => Err("php.ini settings are single values (string, number or boolean)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("1 fortnight").is_err());
        assert_eq!(SizeValue::Text("100M".into()).get(), Ok(100 << 20));
        assert_eq!(SizeValue::Text("10k".into()).get(), Ok(10 << 10));
        assert_eq!(SizeValue::Bytes(5).get(), Ok(5));
        assert!(SizeValue::Text("lots".into()).get().is_err());
    }
}

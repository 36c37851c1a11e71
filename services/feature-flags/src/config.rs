use serde::Deserialize;

/// `[flags]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    /// Environment evaluated when a request names none.
    pub default_environment: String,
    /// Seconds between full reloads of the flag snapshot (changes arrive sooner by notification).
    pub full_refresh_secs: u64,
}

impl Default for FlagsConfig {
    fn default() -> Self {
        FlagsConfig {
            default_environment: "production".into(),
            full_refresh_secs: 30,
        }
    }
}

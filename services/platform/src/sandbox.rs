//! The sandbox: `maxai up` without provider OAuth apps starts the faithful fake providers of
//! `maxai-fakes` on loopback and points the adapters, IAM's OAuth apps and webhook ingress's GHL
//! key at them, so a newcomer connects accounts, runs flows and receives signed webhooks with
//! no provider account. The fakes are the same ones the tests run against.
use maxai_fakes::{
    ghl::{FakeGhl, FakeGhlConfig},
    google_calendar::FakeGoogleCalendar,
    microsoft::{FakeMicrosoft, FakeMicrosoftClient, FakeMicrosoftConfig},
    n8n::{FakeN8n, FakeN8nConfig},
    openrouter::{FakeOpenRouter, FakeOpenRouterConfig},
    retell::FakeRetell,
    twilio::{FakeTwilio, FakeTwilioConfig},
    FakeGoogle, FakeGoogleClient, FakeGoogleConfig, FakeGoogleUser,
};
use secrecy::SecretString;

use crate::PlatformConfig;

/// Credentials the sandbox providers accept (they guard nothing real).
pub const TWILIO_ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
pub const TWILIO_AUTH_TOKEN: &str = "sandbox-twilio-auth-token";
pub const TWILIO_NUMBER: &str = "+15005550006";
pub const RETELL_API_KEY: &str = "key_sandbox_retell_0000";
pub const OPENROUTER_API_KEY: &str = maxai_fakes::openrouter::TEST_API_KEY;
pub const N8N_API_KEY: &str = maxai_fakes::n8n::TEST_API_KEY;
pub const GHL_LOCATION: &str = "sandboxlocation0001";
pub const GOOGLE_USER: &str = "front-desk@sandbox.example";
/// The RFC 8032 test key the fake GHL signs webhooks with, as webhook ingress reads keys.
const GHL_WEBHOOK_PUBLIC_KEY: &str = "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

const GHL_CLIENT: (&str, &str) = ("65f0c0ffee0000000000fa4e-sandbox", "sandbox-ghl-secret");
const GOOGLE_CLIENT: (&str, &str) = ("sandbox.apps.googleusercontent.com", "GOCSPX-sandbox");
const MICROSOFT_CLIENT: (&str, &str) =
    ("00000000-0000-0000-0000-00000000sand", "sandbox-ms-secret");

/// The running fakes; dropping this stops them.
pub struct Sandbox {
    pub ghl: FakeGhl,
    pub google: FakeGoogle,
    pub google_calendar: FakeGoogleCalendar,
    pub microsoft: FakeMicrosoft,
    pub twilio: FakeTwilio,
    pub retell: FakeRetell,
    pub openrouter: FakeOpenRouter,
    pub n8n: FakeN8n,
}

/// Whether `config` asks for the sandbox: on, no real OAuth app configured and no adapter
/// pointed anywhere but its provider's default (an operator who set a base URL meant it).
pub fn wanted(config: &PlatformConfig) -> bool {
    let apps = &config.iam.connections;
    let adapters = &config.adapters;
    let defaults = crate::adapters::AdaptersConfig::default();
    config.adapters.sandbox
        && apps.ghl.client_id.is_empty()
        && apps.google.client_id.is_empty()
        && apps.microsoft.client_id.is_empty()
        && adapters.ghl.base_url == defaults.ghl.base_url
        && adapters.twilio.base_url == defaults.twilio.base_url
        && adapters.retell.base_url == defaults.retell.base_url
        && adapters.openrouter.base_url == defaults.openrouter.base_url
        && adapters.google_calendar.base_url == defaults.google_calendar.base_url
        && adapters.microsoft_calendar.base_url == defaults.microsoft_calendar.base_url
}

/// Starts every fake and rewrites `config` to use them.
pub async fn start(config: &mut PlatformConfig) -> anyhow::Result<Sandbox> {
    let callback = config.iam.connections.redirect_uri.clone();
    let ghl = FakeGhl::try_start(FakeGhlConfig::default()).await?;
    ghl.add_client(GHL_CLIENT.0, GHL_CLIENT.1, &[callback.as_str()]);
    ghl.add_location(GHL_LOCATION, "sandboxcompany0001", "Sandbox Dental");

    let google = FakeGoogle::try_start(FakeGoogleConfig {
        // Calendar connections are not sign-ins: no nonce.
        strict: false,
        ..FakeGoogleConfig::default()
    })
    .await?;
    google.add_client(FakeGoogleClient {
        client_id: GOOGLE_CLIENT.0.into(),
        client_secret: GOOGLE_CLIENT.1.into(),
        redirect_uris: vec![callback.clone()],
    });
    google.add_user(FakeGoogleUser::new("100000000000000000001", GOOGLE_USER));
    let google_calendar = FakeGoogleCalendar::start(&google).await;

    let microsoft = FakeMicrosoft::start(FakeMicrosoftConfig::default()).await;
    microsoft.add_client(FakeMicrosoftClient {
        client_id: MICROSOFT_CLIENT.0.into(),
        client_secret: Some(MICROSOFT_CLIENT.1.into()),
        redirect_uris: vec![callback],
    });
    microsoft.add_user(GOOGLE_USER);

    let twilio = FakeTwilio::try_start(FakeTwilioConfig {
        auto_progress: Some(std::time::Duration::from_secs(1)),
        ..FakeTwilioConfig::default()
    })
    .await?;
    twilio.add_account(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN);
    twilio.add_number(TWILIO_ACCOUNT_SID, TWILIO_NUMBER);
    let retell = FakeRetell::try_start().await?;
    retell.add_api_key(RETELL_API_KEY);
    let openrouter = FakeOpenRouter::try_start(FakeOpenRouterConfig::default()).await?;
    let n8n = FakeN8n::try_start(FakeN8nConfig::default()).await?;

    let apps = &mut config.iam.connections;
    let app = |app: &mut maxai_iam::config::OAuthAppConfig,
               (id, secret): (&str, &str),
               authorize: String,
               token: String,
               revoke: String| {
        app.client_id = id.into();
        app.client_secret = SecretString::from(secret.to_owned());
        app.authorize_url = authorize;
        app.token_url = token;
        app.revoke_url = revoke;
    };
    app(
        &mut apps.ghl,
        GHL_CLIENT,
        ghl.authorize_url(),
        format!("{}/oauth/token", ghl.base_url()),
        String::new(),
    );
    apps.ghl.location_token_url = format!("{}/oauth/locationToken", ghl.base_url());
    app(
        &mut apps.google,
        GOOGLE_CLIENT,
        format!("{}/o/oauth2/v2/auth", google.base_url()),
        format!("{}/token", google.base_url()),
        format!("{}/revoke", google.base_url()),
    );
    app(
        &mut apps.microsoft,
        MICROSOFT_CLIENT,
        format!("{}/common/oauth2/v2.0/authorize", microsoft.base_url()),
        format!("{}/common/oauth2/v2.0/token", microsoft.base_url()),
        String::new(),
    );
    let checks = &mut config.iam.connections.key_checks;
    checks.twilio = twilio.base_url().to_owned();
    checks.retell = retell.base_url().to_owned();
    checks.openrouter = openrouter.base_url();
    let adapters = &mut config.adapters;
    adapters.ghl.base_url = ghl.base_url().to_owned();
    adapters.google_calendar.base_url = google_calendar.base_url().to_owned();
    adapters.microsoft_calendar.base_url = microsoft.base_url().to_owned();
    adapters.twilio.base_url = twilio.base_url().to_owned();
    adapters.retell.base_url = retell.base_url().to_owned();
    adapters.openrouter.base_url = openrouter.base_url();
    config
        .webhook
        .ghl
        .public_keys
        .push(GHL_WEBHOOK_PUBLIC_KEY.to_owned());
    tracing::info!(
        ghl = ghl.base_url(),
        google = google.base_url(),
        twilio = twilio.base_url(),
        retell = retell.base_url(),
        n8n = n8n.base_url(),
        "sandbox providers started"
    );
    Ok(Sandbox {
        ghl,
        google,
        google_calendar,
        microsoft,
        twilio,
        retell,
        openrouter,
        n8n,
    })
}

impl Sandbox {
    /// What to tell a newcomer: where each fake runs and the credentials it accepts.
    pub fn describe(&self) -> String {
        format!(
            "Sandbox providers (fakes on loopback; no real account is touched):\n  GHL {ghl}  (OAuth: POST .../connections:startOAuth provider CONNECTION_PROVIDER_GHL, location {GHL_LOCATION})\n  Google {google}, calendar {cal}  (provider CONNECTION_PROVIDER_GOOGLE_CALENDAR, user {GOOGLE_USER})\n  Microsoft {ms}\n  Twilio {twilio}  (accountId {TWILIO_ACCOUNT_SID}, apiKey {TWILIO_AUTH_TOKEN}, number {TWILIO_NUMBER})\n  Retell {retell}  (apiKey {RETELL_API_KEY})\n  OpenRouter {openrouter}  (apiKey {OPENROUTER_API_KEY})\n  n8n {n8n}  (baseUrl {n8n}, apiKey {N8N_API_KEY})\n",
            ghl = self.ghl.base_url(),
            google = self.google.base_url(),
            cal = self.google_calendar.base_url(),
            ms = self.microsoft.base_url(),
            twilio = self.twilio.base_url(),
            retell = self.retell.base_url(),
            openrouter = self.openrouter.base_url(),
            n8n = self.n8n.base_url(),
        )
    }
}

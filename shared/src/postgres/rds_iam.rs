//! RDS IAM database authentication: instead of a password, a short-lived token that AWS signs
//! for the process's own IAM identity.
//!
//! The token is a SigV4-presigned `connect` request for the database user, without its scheme:
//! `HOST:PORT/?Action=connect&DBUser=USER&X-Amz-Algorithm=…&X-Amz-Signature=…`, signed for the
//! service `rds-db`, valid 15 minutes (RDS checks it when a connection starts; a connection
//! outlives it). It is made with the AWS SDK's own signer (`aws-sigv4`), locally: no AWS call.
//! A fresh token is made for every connection, so long operations never present a stale one.
//!
//! A token is a credential: it goes only where passwords go (`PGPASSWORD` of a child process,
//! the connection's password), never into arguments, messages or logs.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;

use super::PgError;

/// How long a token is accepted for starting a connection (RDS's maximum).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Signs RDS auth tokens for one database user on one endpoint.
#[derive(Clone)]
pub struct RdsIamAuth {
    host: String,
    port: u16,
    user: String,
    region: String,
    credentials: Credentials,
}

impl std::fmt::Debug for RdsIamAuth {
    /// Never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdsIamAuth")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl RdsIamAuth {
    /// Tokens for `user` at `host:port`, signed with `credentials` for `region`. Signs one token
    /// at once, so that inputs the signer refuses fail here, at configuration time.
    pub fn new(
        host: &str,
        port: u16,
        user: &str,
        region: &str,
        credentials: Credentials,
    ) -> Result<Self, PgError> {
        let auth = RdsIamAuth {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            region: region.to_owned(),
            credentials,
        };
        auth.token(SystemTime::now())?;
        Ok(auth)
    }

    /// Tokens signed with the process's AWS identity (the usual credential chain: a Lambda
    /// role, a profile, SSO) in the configured region.
    pub async fn from_aws(
        aws: &SdkConfig,
        host: &str,
        port: u16,
        user: &str,
    ) -> Result<Self, PgError> {
        let fail = |why: String| PgError::Auth(format!("RDS IAM authentication: {why}"));
        let region = aws
            .region()
            .ok_or_else(|| fail("no AWS region configured (set AWS_REGION)".into()))?;
        let provider = aws
            .credentials_provider()
            .ok_or_else(|| fail("no AWS credentials provider configured".into()))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| fail(format!("no AWS credentials to sign the token with: {e}")))?;
        Self::new(host, port, user, region.as_ref(), credentials)
    }

    /// The database user the tokens are for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// A token signed at `at`, valid [`TOKEN_LIFETIME`] from then.
    pub fn token(&self, at: SystemTime) -> Result<String, PgError> {
        if let Some(expiry) = self.credentials.expiry() {
            if expiry <= at {
                return Err(PgError::Auth(format!(
                    "RDS IAM authentication: the AWS credentials expired at {}; run again with fresh credentials",
                    crate::model::format_time(expiry.into())
                )));
            }
        }
        auth_token(
            &self.host,
            self.port,
            &self.user,
            &self.region,
            &self.credentials,
            at,
        )
    }
}

/// The RDS auth token for `user` at `host:port`, signed with `credentials` for `region` at `at`:
/// what `aws rds generate-db-auth-token` prints for the same inputs.
pub fn auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<String, PgError> {
    let fail = |why: String| PgError::Auth(format!("RDS IAM authentication token: {why}"));
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let endpoint = format!("{host}:{port}");
    let unsigned = format!("{endpoint}/?Action=connect&DBUser={}", encode(user));
    let url = format!("https://{unsigned}");
    let mut settings = SigningSettings::default();
    settings.expires_in = Some(TOKEN_LIFETIME);
    settings.signature_location = SignatureLocation::QueryParams;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::empty())
        .map_err(|e| fail(format!("{endpoint} is not a host and port: {e}")))?;
    let (instructions, _) = sign(request, &params.into())
        .map_err(|e| fail(e.to_string()))?
        .into_parts();
    // The signature last, as the AWS CLI and SDKs print tokens (the order means nothing to
    // RDS; it makes tokens comparable with theirs).
    let mut params: Vec<_> = instructions.params().iter().collect();
    params.sort_by_key(|(name, _)| *name == "X-Amz-Signature");
    let mut token = unsigned;
    for (name, value) in params {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.push_str(&encode(value));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_521_600) // 2026-11-24T12:00:00Z
    }

    fn credentials(session_token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "test",
        )
    }

    const HOST: &str = "shop.abcdefghijkl.eu-west-1.rds.amazonaws.com";

    /// The expected tokens were derived independently with botocore 1.44.8 (the AWS SDK for
    /// Python, whose `generate_db_auth_token` is the reference implementation), from the same
    /// fixed inputs and no network:
    ///
    /// ```python
    /// s = botocore.session.get_session()
    /// s.set_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", TOKEN)
    /// with mock.patch("botocore.auth.get_current_datetime",
    ///                 return_value=datetime.datetime(2026, 11, 24, 12, 0, 0)):
    ///     print(s.create_client("rds", region_name="eu-west-1").generate_db_auth_token(
    ///         "shop.abcdefghijkl.eu-west-1.rds.amazonaws.com", 5432, "pgkeep_backup"))
    /// ```
    ///
    /// with `TOKEN = None` and `TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE/token+with=chars"` (a session
    /// token, as a Lambda role has, with the characters that need encoding).
    #[test]
    fn tokens_match_the_reference_signer_for_fixed_inputs() {
        let token = auth_token(
            HOST,
            5432,
            "pgkeep_backup",
            "eu-west-1",
            &credentials(None),
            at_noon(),
        )
        .unwrap();
        assert_eq!(
            token,
            "shop.abcdefghijkl.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=pgkeep_backup&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261124%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20261124T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=682053b9b1764f785affa45030fa4ab871876df4672dc0e84a8a293d953892b2"
        );

        let with_session = auth_token(
            HOST,
            5432,
            "pgkeep_backup",
            "eu-west-1",
            &credentials(Some("IQoJb3JpZ2luX2VjEXAMPLE/token+with=chars")),
            at_noon(),
        )
        .unwrap();
        assert_eq!(
            with_session,
            "shop.abcdefghijkl.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=pgkeep_backup&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261124%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20261124T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2Ftoken%2Bwith%3Dchars&X-Amz-Signature=f92dc9bdf6f5168a5fc5eade9929b49046fb2b4e02e11b77bef901ad6d389df0"
        );
    }

    #[test]
    fn expired_credentials_are_refused_and_debug_shows_no_secret() {
        let expired = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session".into()),
            Some(SystemTime::now() + Duration::from_secs(60)),
            "test",
        );
        let auth = RdsIamAuth::new(HOST, 5432, "pgkeep_backup", "eu-west-1", expired).unwrap();
        let later = SystemTime::now() + Duration::from_secs(120);
        let err = auth.token(later).unwrap_err().to_string();
        assert!(err.contains("expired"), "{err}");
        let shown = format!("{auth:?}");
        assert!(
            shown.contains(HOST) && shown.contains("pgkeep_backup"),
            "{shown}"
        );
        assert!(
            !shown.contains("wJalr") && !shown.contains("session"),
            "{shown}"
        );
        // Each call signs anew: a token made later differs.
        let a = auth.token(SystemTime::now()).unwrap();
        let b = auth
            .token(SystemTime::now() + Duration::from_secs(1))
            .unwrap();
        assert_ne!(a, b);
    }
}

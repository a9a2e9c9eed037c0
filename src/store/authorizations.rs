//! `browser_sessions`, `authorization_codes`, `consents` and the grants (`sessions` rows with a
//! `client_id`) the code flow starts: what the authorization endpoint reads in one round trip,
//! the code's single-use redemption, and logout.

use chrono::{DateTime, Utc};

use super::{changes, integer, optional_integer, optional_text, text};
use crate::domain::client::{AuthMethod, ClientMetadata, RegisteredClient};
use crate::domain::opaque_token::TokenHash;
use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement};

/// A live browser session and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSession {
    pub id: String,
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    pub auth_time: i64,
}

/// What an authorization request needs to decide, read together: the client, the browser's
/// session (if its cookie names a live one) and what the session's user consented to for the
/// client.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationContext {
    pub client: Option<RegisteredClient>,
    pub session: Option<BrowserSession>,
    pub consented_scope: Option<String>,
}

fn client_statement(client_id: &str) -> Statement {
    Statement::new(
        "SELECT client_id, client_secret_hash, client_name, redirect_uris, post_logout_redirect_uris, grant_types,
                scope, token_endpoint_auth_method, id_token_signed_response_alg, skip_consent, registered_with_token
         FROM clients WHERE client_id = ?1",
        [client_id.into()],
    )
}

fn client_record(row: &Row) -> Result<RegisteredClient, DatabaseError> {
    let list = |column: &str| -> Result<Vec<String>, DatabaseError> {
        serde_json::from_str(&text(row, column)?).map_err(|err| DatabaseError(format!("{column}: {err}")))
    };
    let auth_method = match text(row, "token_endpoint_auth_method")?.as_str() {
        "client_secret_post" => AuthMethod::ClientSecretPost,
        "none" => AuthMethod::None,
        _ => AuthMethod::ClientSecretBasic,
    };
    Ok(RegisteredClient {
        client_id: text(row, "client_id")?,
        secret_hash: optional_text(row, "client_secret_hash")?,
        metadata: ClientMetadata {
            redirect_uris: list("redirect_uris")?,
            post_logout_redirect_uris: list("post_logout_redirect_uris")?,
            client_name: optional_text(row, "client_name")?,
            auth_method,
            grant_types: list("grant_types")?,
            scope: text(row, "scope")?,
            id_token_signed_response_alg: text(row, "id_token_signed_response_alg")?,
            skip_consent: integer(row, "skip_consent")? != 0,
        },
        registered_with_token: integer(row, "registered_with_token")? != 0,
    })
}

fn browser_session_statement(cookie_hash: &TokenHash, now: DateTime<Utc>) -> Statement {
    Statement::new(
        "SELECT b.id, b.user_id, b.auth_time, u.email, u.email_verified_at
         FROM browser_sessions b JOIN users u ON u.id = b.user_id
         WHERE b.cookie_hash = ?1 AND b.ended_at IS NULL AND b.expires_at > ?2",
        [cookie_hash.as_str().into(), now.timestamp().into()],
    )
}

fn browser_session_record(row: &Row) -> Result<BrowserSession, DatabaseError> {
    Ok(BrowserSession {
        id: text(row, "id")?,
        user_id: text(row, "user_id")?,
        email: text(row, "email")?,
        email_verified: optional_integer(row, "email_verified_at")?.is_some(),
        auth_time: integer(row, "auth_time")?,
    })
}

/// A registered client by id.
pub async fn find_client(db: &impl Database, client_id: &str) -> Result<Option<RegisteredClient>, DatabaseError> {
    let outcomes = db.batch(vec![client_statement(client_id)]).await?;
    outcomes.first().and_then(|outcome| outcome.rows.first()).map(client_record).transpose()
}

/// The browser session a cookie names, if it is live.
pub async fn find_browser_session(
    db: &impl Database,
    cookie_hash: &TokenHash,
    now: DateTime<Utc>,
) -> Result<Option<BrowserSession>, DatabaseError> {
    let outcomes = db.batch(vec![browser_session_statement(cookie_hash, now)]).await?;
    outcomes.first().and_then(|outcome| outcome.rows.first()).map(browser_session_record).transpose()
}

/// The client (from `DB`), and the browser session a cookie names with its user's consent for
/// the client (from the session's shard, `users`): one round trip, both at once.
pub async fn authorization_context(
    global: &impl Database,
    session: Option<(&impl Database, &TokenHash)>,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<AuthorizationContext, DatabaseError> {
    let client = global.batch(vec![client_statement(client_id)]);
    let session = async {
        let Some((users, cookie_hash)) = session else { return Ok(Vec::new()) };
        users
            .batch(vec![
                browser_session_statement(cookie_hash, now),
                Statement::new(
                    "SELECT c.scope FROM consents c JOIN browser_sessions b ON b.user_id = c.user_id
                     WHERE b.cookie_hash = ?1 AND c.client_id = ?2",
                    [cookie_hash.as_str().into(), client_id.into()],
                ),
            ])
            .await
    };
    let (client, session) = futures_util::future::join(client, session).await;
    let (client, session) = (client?, session?);
    let row = |outcomes: &[crate::ports::StatementOutcome], index: usize| {
        outcomes.get(index).and_then(|outcome| outcome.rows.first()).cloned()
    };
    Ok(AuthorizationContext {
        client: row(&client, 0).as_ref().map(client_record).transpose()?,
        session: row(&session, 0).as_ref().map(browser_session_record).transpose()?,
        consented_scope: row(&session, 1).as_ref().map(|row| text(row, "scope")).transpose()?,
    })
}

/// A code to store: everything its redemption is bound to.
pub struct NewCode<'a> {
    pub hash: &'a TokenHash,
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub browser_session_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub nonce: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
    pub auth_time: i64,
    pub expires_at: DateTime<Utc>,
}

/// Stores a code, and in the same batch the consent it was issued under (`consent`: the
/// scope to remember for the user and client, when the person just approved it).
pub async fn issue_code(
    db: &impl Database,
    code: &NewCode<'_>,
    consent: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    let mut statements = vec![Statement::new(
        "INSERT INTO authorization_codes (code_hash, client_id, user_id, browser_session_id, redirect_uri, scope,
             nonce, code_challenge, auth_time, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        [
            code.hash.as_str().into(),
            code.client_id.into(),
            code.user_id.into(),
            code.browser_session_id.into(),
            code.redirect_uri.into(),
            code.scope.into(),
            code.nonce.into(),
            code.code_challenge.into(),
            code.auth_time.into(),
            now.timestamp().into(),
            code.expires_at.timestamp().into(),
        ],
    )];
    if let Some(scope) = consent {
        statements.push(Statement::new(
            "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
            [code.user_id.into(), code.client_id.into(), scope.into(), now.timestamp().into()],
        ));
    }
    db.batch(statements).await.map(drop)
}

/// A redemption attempt: the code and what it must be bound to, and what a win starts.
pub struct Redemption<'a> {
    pub code: &'a TokenHash,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// The S256 challenge of the presented `code_verifier`, or `None` when none was sent:
    /// equal to the stored challenge (both absent included) or the redemption fails.
    pub verifier_challenge: Option<&'a str>,
    /// The grant (a `sessions` row) a win starts, and when it ends.
    pub grant_id: &'a str,
    pub grant_expires_at: DateTime<Utc>,
    /// The first refresh token, when the client may use the refresh grant; it is only stored
    /// if the code's scope has `offline_access`.
    pub refresh_token: Option<(&'a TokenHash, DateTime<Utc>)>,
}

/// A code as stored, with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub client_id: String,
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    pub browser_session_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub consumed: bool,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    /// The grant a redemption started.
    pub session_id: Option<String>,
}

/// Redeems a code: one conditional `UPDATE` consumes it only if it is live, unused, this
/// client's, for this redirect URI, its PKCE check passes and its browser session has not
/// ended, so of concurrent redemptions exactly one wins; the grant and its refresh token are
/// inserted in the same batch, found by the code's new `session_id`. Returns whether this call
/// won and the code as it now is (`None`: no such code).
pub async fn redeem_code(
    db: &impl Database,
    redemption: &Redemption<'_>,
    now: DateTime<Utc>,
) -> Result<(bool, Option<CodeRecord>), DatabaseError> {
    let code = redemption.code.as_str();
    let mut statements = vec![
        Statement::new(
            "UPDATE authorization_codes SET consumed_at = ?2, session_id = ?6
             WHERE code_hash = ?1 AND consumed_at IS NULL AND expires_at > ?2 AND client_id = ?3 AND redirect_uri = ?4
               AND code_challenge IS ?5
               AND EXISTS (SELECT 1 FROM browser_sessions b
                           WHERE b.id = authorization_codes.browser_session_id AND b.ended_at IS NULL)",
            [
                code.into(),
                now.timestamp().into(),
                redemption.client_id.into(),
                redemption.redirect_uri.into(),
                redemption.verifier_challenge.into(),
                redemption.grant_id.into(),
            ],
        ),
        Statement::new(
            "INSERT INTO sessions (id, user_id, auth_time, created_at, expires_at, client_id, scope, browser_session_id)
             SELECT ?2, user_id, auth_time, ?3, ?4, client_id, scope, browser_session_id
             FROM authorization_codes WHERE code_hash = ?1 AND session_id = ?2",
            [
                code.into(),
                redemption.grant_id.into(),
                now.timestamp().into(),
                redemption.grant_expires_at.timestamp().into(),
            ],
        ),
    ];
    if let Some((refresh_token, expires_at)) = redemption.refresh_token {
        statements.push(Statement::new(
            "INSERT INTO refresh_tokens (token_hash, session_id, user_id, issued_at, expires_at)
             SELECT ?1, id, user_id, ?3, min(?4, expires_at) FROM sessions
             WHERE id = ?2 AND (' ' || scope || ' ') LIKE '% offline_access %'",
            [
                refresh_token.as_str().into(),
                redemption.grant_id.into(),
                now.timestamp().into(),
                expires_at.timestamp().into(),
            ],
        ));
    }
    statements.push(Statement::new(
        "SELECT c.client_id, c.user_id, c.browser_session_id, c.scope, c.nonce, c.auth_time, c.consumed_at, c.session_id,
                c.redirect_uri, c.code_challenge, u.email, u.email_verified_at
         FROM authorization_codes c JOIN users u ON u.id = c.user_id WHERE c.code_hash = ?1",
        [code.into()],
    ));
    let outcomes = db.batch(statements).await?;
    let record = outcomes
        .last()
        .and_then(|outcome| outcome.rows.first())
        .map(|row| -> Result<CodeRecord, DatabaseError> {
            Ok(CodeRecord {
                client_id: text(row, "client_id")?,
                user_id: text(row, "user_id")?,
                email: text(row, "email")?,
                email_verified: optional_integer(row, "email_verified_at")?.is_some(),
                browser_session_id: text(row, "browser_session_id")?,
                scope: text(row, "scope")?,
                nonce: optional_text(row, "nonce")?,
                auth_time: integer(row, "auth_time")?,
                consumed: optional_integer(row, "consumed_at")?.is_some(),
                redirect_uri: text(row, "redirect_uri")?,
                code_challenge: optional_text(row, "code_challenge")?,
                session_id: optional_text(row, "session_id")?,
            })
        })
        .transpose()?;
    Ok((changes(&outcomes, 0) == 1, record))
}

/// Ends one grant (a second redemption of its code): the session and its refresh tokens.
pub async fn revoke_grant(db: &impl Database, grant_id: &str, now: DateTime<Utc>) -> Result<(), DatabaseError> {
    let params = || -> Vec<SqlValue> { vec![grant_id.into(), now.timestamp().into()] };
    db.batch(vec![
        Statement::new("UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params()),
        Statement::new(
            "UPDATE refresh_tokens SET revoked_at = ?2 WHERE session_id = ?1 AND revoked_at IS NULL",
            params(),
        ),
    ])
    .await
    .map(drop)
}

/// Ends a browser session of `user_id` and every grant issued in it with their refresh tokens
/// (a logout). Returns whether a live session ended.
pub async fn end_browser_session(
    db: &impl Database,
    browser_session_id: &str,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let params = || -> Vec<SqlValue> { vec![browser_session_id.into(), user_id.into(), now.timestamp().into()] };
    let outcomes = db
        .batch(vec![
            Statement::new(
                "UPDATE browser_sessions SET ended_at = ?3 WHERE id = ?1 AND user_id = ?2 AND ended_at IS NULL",
                params(),
            ),
            Statement::new(
                "UPDATE refresh_tokens SET revoked_at = ?3
                 WHERE revoked_at IS NULL AND user_id = ?2
                   AND session_id IN (SELECT id FROM sessions WHERE browser_session_id = ?1)",
                params(),
            ),
            Statement::new(
                "UPDATE sessions SET revoked_at = ?3 WHERE browser_session_id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                params(),
            ),
        ])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

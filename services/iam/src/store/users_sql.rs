//! Users in SQL (both dialects).
use async_trait::async_trait;
use maxai_kit::{on_db, storage::now_micros, Error, ErrorKind, Result};

use super::{sql::SqlIamStore, UserStore};
use crate::domain::{User, UserState};

const COLUMNS: &str = "tenant_id, id, email, display_name, state, google_subject, hosted_domain, picture_uri, last_sign_in_at_us, \
                       revision, created_at_us, updated_at_us";

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    id: String,
    email: String,
    display_name: String,
    state: String,
    google_subject: String,
    hosted_domain: String,
    picture_uri: String,
    last_sign_in_at_us: Option<i64>,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

impl TryFrom<Row> for User {
    type Error = Error;
    fn try_from(r: Row) -> Result<User> {
        let Row {
            tenant_id,
            id,
            email,
            display_name,
            state,
            google_subject,
            hosted_domain,
            picture_uri,
            last_sign_in_at_us,
            revision,
            created_at_us,
            updated_at_us,
        } = r;
        let state = UserState::parse(&state).ok_or_else(|| {
            Error::internal(anyhow::anyhow!("stored user has an unreadable state"))
        })?;
        Ok(User {
            tenant_id,
            id,
            email,
            display_name,
            state,
            google_subject,
            hosted_domain,
            picture_uri,
            last_sign_in_at_us,
            revision,
            created_at_us,
            updated_at_us,
        })
    }
}

#[async_trait]
impl UserStore for SqlIamStore {
    async fn create_user(&self, u: &User, request_id: Option<&str>) -> Result<User> {
        let by_request =
            format!("SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND create_request_id = $2");
        if let Some(rid) = request_id {
            let row: Option<Row> = on_db!(self.db(), |pool| sqlx::query_as(&by_request)
                .bind(&u.tenant_id)
                .bind(rid)
                .fetch_optional(pool)
                .await)?;
            if let Some(row) = row {
                return row.try_into();
            }
        }
        let sql = format!("INSERT INTO users ({COLUMNS}, create_request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10, $11)");
        let inserted = on_db!(self.db(), |pool| sqlx::query(&sql)
            .bind(&u.tenant_id)
            .bind(&u.id)
            .bind(&u.email)
            .bind(&u.display_name)
            .bind(u.state.as_str())
            .bind(&u.google_subject)
            .bind(&u.hosted_domain)
            .bind(&u.picture_uri)
            .bind(u.last_sign_in_at_us)
            .bind(now_micros())
            .bind(request_id)
            .execute(pool)
            .await
            .map(|_| ()));
        match inserted {
            Ok(()) => {}
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                if let Some(rid) = request_id {
                    let row: Option<Row> = on_db!(self.db(), |pool| sqlx::query_as(&by_request)
                        .bind(&u.tenant_id)
                        .bind(rid)
                        .fetch_optional(pool)
                        .await)?;
                    if let Some(row) = row {
                        return row.try_into();
                    }
                }
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "a user with id {} or email {} already exists",
                        u.id, u.email
                    ),
                ));
            }
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                return Err(Error::not_found(format!("tenant {}", u.tenant_id)))
            }
            Err(e) => return Err(e.into()),
        }
        self.get_user(&u.tenant_id, &u.id)
            .await?
            .ok_or_else(|| Error::not_found(u.name()))
    }

    async fn get_user(&self, tenant_id: &str, id: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2");
        let row: Option<Row> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(User::try_from).transpose()
    }

    async fn list_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
        state: Option<UserState>,
        email_prefix: &str,
    ) -> Result<Vec<User>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id > $2 AND ($3 = '' OR state = $3) \
             AND substr(email, 1, length($4)) = $4 ORDER BY id LIMIT $5"
        );
        let rows: Vec<Row> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(after.unwrap_or(""))
            .bind(state.map(UserState::as_str).unwrap_or(""))
            .bind(email_prefix)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(User::try_from).collect()
    }

    async fn update_user(&self, u: &User, expected_revision: i64) -> Result<User> {
        let n = on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE users SET display_name = $3, state = $4, google_subject = $5, hosted_domain = $6, picture_uri = $7, \
             last_sign_in_at_us = $8, revision = revision + 1, updated_at_us = $9 WHERE tenant_id = $1 AND id = $2 AND revision = $10"
        )
        .bind(&u.tenant_id)
        .bind(&u.id)
        .bind(&u.display_name)
        .bind(u.state.as_str())
        .bind(&u.google_subject)
        .bind(&u.hosted_domain)
        .bind(&u.picture_uri)
        .bind(u.last_sign_in_at_us)
        .bind(now_micros())
        .bind(expected_revision)
        .execute(pool)
        .await
        .map(|x| x.rows_affected())
        })?;
        match (n, self.get_user(&u.tenant_id, &u.id).await?) {
            (1, Some(user)) => Ok(user),
            (_, Some(_)) => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "user {} was changed by someone else; read it again",
                    u.name()
                ),
            )),
            (_, None) => Err(Error::not_found(u.name())),
        }
    }

    async fn delete_user(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let principal = format!("tenants/{tenant_id}/users/{id}");
        let deleted: std::result::Result<u64, sqlx::Error> = on_db!(self.db(), |pool| async {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "DELETE FROM users WHERE tenant_id = $1 AND id = $2 AND ($3 < 0 OR revision = $3)",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(expected_revision.unwrap_or(-1))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                sqlx::query("DELETE FROM role_assignments WHERE tenant_id = $1 AND principal = $2")
                    .bind(tenant_id)
                    .bind(&principal)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(n)
        }
        .await);
        match (deleted?, self.get_user(tenant_id, id).await?) {
            (1, _) => Ok(()),
            (_, Some(_)) => Err(Error::new(
                ErrorKind::Conflict,
                format!("user {principal} was changed by someone else; read it again"),
            )),
            (_, None) => Err(Error::not_found(principal)),
        }
    }
}

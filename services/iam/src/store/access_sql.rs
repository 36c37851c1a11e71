//! Custom roles and role assignments in SQL (both dialects).
use std::collections::BTreeSet;

use async_trait::async_trait;
use maxai_kit::{on_db, storage::now_micros, Error, ErrorKind, Result};

use super::{sql::SqlIamStore, AccessStore, AssignmentFilter};
use crate::domain::{Assignment, CustomRole};

fn corrupt() -> Error {
    Error::internal(anyhow::anyhow!("stored role has unreadable permissions"))
}

fn unique(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const ROLE_COLUMNS: &str =
    "tenant_id, id, title, description, permissions, revision, created_at_us, updated_at_us";

#[derive(sqlx::FromRow)]
struct RoleRow {
    tenant_id: String,
    id: String,
    title: String,
    description: String,
    permissions: String,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

impl TryFrom<RoleRow> for CustomRole {
    type Error = Error;
    fn try_from(r: RoleRow) -> Result<CustomRole> {
        let RoleRow {
            tenant_id,
            id,
            title,
            description,
            permissions,
            revision,
            created_at_us,
            updated_at_us,
        } = r;
        let permissions: BTreeSet<String> =
            serde_json::from_str(&permissions).map_err(|_| corrupt())?;
        Ok(CustomRole {
            tenant_id,
            id,
            title,
            description,
            permissions,
            revision,
            created_at_us,
            updated_at_us,
        })
    }
}

const ASSIGNMENT_COLUMNS: &str =
    "tenant_id, id, principal, role, scope, description, expire_at_us, creator, revision, created_at_us, updated_at_us";

#[derive(sqlx::FromRow)]
struct AssignmentRow {
    tenant_id: String,
    id: String,
    principal: String,
    role: String,
    scope: String,
    description: String,
    expire_at_us: Option<i64>,
    creator: String,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

impl From<AssignmentRow> for Assignment {
    fn from(r: AssignmentRow) -> Assignment {
        let AssignmentRow {
            tenant_id,
            id,
            principal,
            role,
            scope,
            description,
            expire_at_us,
            creator,
            revision,
            created_at_us,
            updated_at_us,
        } = r;
        Assignment {
            tenant_id,
            id,
            principal,
            role,
            scope,
            description,
            expire_at_us,
            creator,
            revision,
            created_at_us,
            updated_at_us,
        }
    }
}

/// After an UPDATE/DELETE guarded by revision touched nothing: stale or gone?
fn lost(exists: bool, what: String) -> Error {
    if exists {
        Error::new(
            ErrorKind::Conflict,
            format!("{what} was changed by someone else; read it again"),
        )
    } else {
        Error::not_found(what)
    }
}

#[async_trait]
impl AccessStore for SqlIamStore {
    async fn create_role(&self, r: &CustomRole, request_id: Option<&str>) -> Result<CustomRole> {
        let by_request = format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = $1 AND create_request_id = $2"
        );
        if let Some(rid) = request_id {
            let row: Option<RoleRow> = on_db!(self.db(), |pool| sqlx::query_as(&by_request)
                .bind(&r.tenant_id)
                .bind(rid)
                .fetch_optional(pool)
                .await)?;
            if let Some(row) = row {
                return row.try_into();
            }
        }
        let permissions = serde_json::to_string(&r.permissions).map_err(Error::internal)?;
        let inserted = on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO roles (tenant_id, id, title, description, permissions, revision, create_request_id, created_at_us, updated_at_us) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7)"
        )
        .bind(&r.tenant_id)
        .bind(&r.id)
        .bind(&r.title)
        .bind(&r.description)
        .bind(&permissions)
        .bind(request_id)
        .bind(now_micros())
        .execute(pool)
        .await
        .map(|_| ())
        });
        match inserted {
            Ok(()) => {}
            Err(e) if unique(&e) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("role {} already exists", r.id),
                ))
            }
            Err(e) if matches!(&e, sqlx::Error::Database(d) if d.is_foreign_key_violation()) => {
                return Err(Error::not_found(format!("tenant {}", r.tenant_id)))
            }
            Err(e) => return Err(e.into()),
        }
        self.get_role(&r.tenant_id, &r.id)
            .await?
            .ok_or_else(|| Error::not_found(format!("role {}", r.id)))
    }

    async fn get_role(&self, tenant_id: &str, id: &str) -> Result<Option<CustomRole>> {
        let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = $1 AND id = $2");
        let row: Option<RoleRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(CustomRole::try_from).transpose()
    }

    async fn list_roles(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CustomRole>> {
        let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3");
        let rows: Vec<RoleRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(CustomRole::try_from).collect()
    }

    async fn update_role(&self, r: &CustomRole, expected_revision: i64) -> Result<CustomRole> {
        let permissions = serde_json::to_string(&r.permissions).map_err(Error::internal)?;
        let n = on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE roles SET title = $3, description = $4, permissions = $5, revision = revision + 1, updated_at_us = $6 \
             WHERE tenant_id = $1 AND id = $2 AND revision = $7"
        )
        .bind(&r.tenant_id)
        .bind(&r.id)
        .bind(&r.title)
        .bind(&r.description)
        .bind(&permissions)
        .bind(now_micros())
        .bind(expected_revision)
        .execute(pool)
        .await
        .map(|x| x.rows_affected())
        })?;
        let now = self.get_role(&r.tenant_id, &r.id).await?;
        match (n, now) {
            (1, Some(role)) => Ok(role),
            (_, now) => Err(lost(now.is_some(), format!("role {}", r.id))),
        }
    }

    async fn delete_role(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let name = format!("tenants/{tenant_id}/roles/{id}");
        let used: i64 = on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM role_assignments WHERE tenant_id = $1 AND role = $2"
        )
        .bind(tenant_id)
        .bind(&name)
        .fetch_one(pool)
        .await)?;
        if used > 0 {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!(
                    "role {name} is still assigned {used} time(s); remove the assignments first"
                ),
            ));
        }
        let n = on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM roles WHERE tenant_id = $1 AND id = $2 AND ($3 < 0 OR revision = $3)"
        )
        .bind(tenant_id)
        .bind(id)
        .bind(expected_revision.unwrap_or(-1))
        .execute(pool)
        .await
        .map(|x| x.rows_affected()))?;
        if n == 1 {
            return Ok(());
        }
        Err(lost(
            self.get_role(tenant_id, id).await?.is_some(),
            format!("role {id}"),
        ))
    }

    async fn create_assignment(
        &self,
        a: &Assignment,
        request_id: Option<&str>,
    ) -> Result<Assignment> {
        let by_request = format!("SELECT {ASSIGNMENT_COLUMNS} FROM role_assignments WHERE tenant_id = $1 AND create_request_id = $2");
        if let Some(rid) = request_id {
            let row: Option<AssignmentRow> = on_db!(self.db(), |pool| sqlx::query_as(&by_request)
                .bind(&a.tenant_id)
                .bind(rid)
                .fetch_optional(pool)
                .await)?;
            if let Some(row) = row {
                return Ok(row.into());
            }
        }
        let inserted = on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO role_assignments (tenant_id, id, principal, role, scope, description, expire_at_us, creator, revision, \
             create_request_id, created_at_us, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $10)"
        )
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(&a.principal)
        .bind(&a.role)
        .bind(&a.scope)
        .bind(&a.description)
        .bind(a.expire_at_us)
        .bind(&a.creator)
        .bind(request_id)
        .bind(now_micros())
        .execute(pool)
        .await
        .map(|_| ())
        });
        match inserted {
            Ok(()) => {}
            Err(e) if unique(&e) => {
                if let Some(rid) = request_id {
                    let row: Option<AssignmentRow> =
                        on_db!(self.db(), |pool| sqlx::query_as(&by_request)
                            .bind(&a.tenant_id)
                            .bind(rid)
                            .fetch_optional(pool)
                            .await)?;
                    if let Some(row) = row {
                        return Ok(row.into());
                    }
                }
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("role assignment {} already exists", a.id),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.get_assignment(&a.tenant_id, &a.id)
            .await?
            .ok_or_else(|| Error::not_found(a.name()))
    }

    async fn get_assignment(&self, tenant_id: &str, id: &str) -> Result<Option<Assignment>> {
        let sql = format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM role_assignments WHERE tenant_id = $1 AND id = $2"
        );
        let row: Option<AssignmentRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Assignment::from))
    }

    async fn list_assignments(
        &self,
        tenant_id: &str,
        f: &AssignmentFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Assignment>> {
        let sql = format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM role_assignments WHERE tenant_id = $1 AND id > $2 \
             AND ($3 = '' OR principal = $3) AND ($4 = '' OR role = $4) AND ($5 = '~' OR scope = $5) \
             AND ($6 < 0 OR expire_at_us IS NULL OR expire_at_us > $6) ORDER BY id LIMIT $7"
        );
        let rows: Vec<AssignmentRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(after.unwrap_or(""))
            .bind(f.principal.as_deref().unwrap_or(""))
            .bind(f.role.as_deref().unwrap_or(""))
            // The platform scope is "", so "no scope filter" needs another marker.
            .bind(f.scope.as_deref().unwrap_or("~"))
            .bind(f.active_at_us.unwrap_or(-1))
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(Assignment::from).collect())
    }

    async fn update_assignment(
        &self,
        a: &Assignment,
        expected_revision: i64,
    ) -> Result<Assignment> {
        let n = on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE role_assignments SET description = $3, expire_at_us = $4, revision = revision + 1, updated_at_us = $5 \
             WHERE tenant_id = $1 AND id = $2 AND revision = $6"
        )
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(&a.description)
        .bind(a.expire_at_us)
        .bind(now_micros())
        .bind(expected_revision)
        .execute(pool)
        .await
        .map(|x| x.rows_affected())
        })?;
        let now = self.get_assignment(&a.tenant_id, &a.id).await?;
        match (n, now) {
            (1, Some(x)) => Ok(x),
            (_, now) => Err(lost(now.is_some(), a.name())),
        }
    }

    async fn delete_assignment(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let n = on_db!(self.db(), |pool| {
            sqlx::query("DELETE FROM role_assignments WHERE tenant_id = $1 AND id = $2 AND ($3 < 0 OR revision = $3)")
            .bind(tenant_id)
            .bind(id)
            .bind(expected_revision.unwrap_or(-1))
            .execute(pool)
            .await
            .map(|x| x.rows_affected())
        })?;
        if n == 1 {
            return Ok(());
        }
        Err(lost(
            self.get_assignment(tenant_id, id).await?.is_some(),
            format!("tenants/{tenant_id}/roleAssignments/{id}"),
        ))
    }

    async fn assignments_of(&self, principal: &str) -> Result<Vec<Assignment>> {
        let sql = format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM role_assignments WHERE principal = $1 ORDER BY id"
        );
        let rows: Vec<AssignmentRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(principal)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(Assignment::from).collect())
    }
}

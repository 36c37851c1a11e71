use async_trait::async_trait;
use maxai_kit::{
    on_db,
    storage::{now_micros, Db},
    Error, ErrorKind, Result,
};
use sqlx::{QueryBuilder, Row};

use super::{AllowlistEntry, FlagStore};
use crate::domain::{AllowlistKind, EnvironmentState, Flag, FlagKey, Stage};

/// Flags in the service's own PostgreSQL schema or SQLite file.
#[derive(Clone, Debug)]
pub struct SqlFlagStore {
    db: Db,
}

impl SqlFlagStore {
    pub fn new(db: Db) -> Self {
        SqlFlagStore { db }
    }
}

const FLAG_COLUMNS: &str =
    "key, description, stage, environments, revision, created_at_us, updated_at_us";

#[derive(sqlx::FromRow)]
struct FlagRow {
    key: String,
    description: String,
    stage: String,
    environments: String,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

fn corrupt(what: &str) -> Error {
    Error::internal(anyhow::anyhow!("stored flag has an unreadable {what}"))
}

impl FlagRow {
    fn into_flag(self, prerequisites: Vec<String>) -> Result<Flag> {
        let FlagRow {
            key,
            description,
            stage,
            environments,
            revision,
            created_at_us,
            updated_at_us,
        } = self;
        Ok(Flag {
            key: FlagKey::parse(&key).map_err(|_| corrupt("key"))?,
            description,
            stage: Stage::parse(&stage).ok_or_else(|| corrupt("stage"))?,
            environments: serde_json::from_str::<Vec<EnvironmentState>>(&environments)
                .map_err(|_| corrupt("environments"))?,
            prerequisites: prerequisites
                .iter()
                .map(|p| FlagKey::parse(p).map_err(|_| corrupt("prerequisite")))
                .collect::<Result<_>>()?,
            revision,
            created_at_us,
            updated_at_us,
        })
    }
}

fn environments_json(flag: &Flag) -> Result<String> {
    serde_json::to_string(&flag.environments).map_err(Error::internal)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Maps a failed prerequisite insert: the named prerequisite does not exist.
fn prerequisite_error(e: sqlx::Error) -> Error {
    if is_foreign_key_violation(&e) {
        Error::invalid("flag.prerequisites", "names a flag that does not exist")
    } else {
        e.into()
    }
}

#[derive(Clone, Copy)]
enum Edit {
    Add,
    Remove,
}

impl SqlFlagStore {
    /// Adds or removes allowlist subjects in one transaction that also bumps the flag's revision
    /// (so evaluations report the new etag and replicas reload). Returns rows changed and revision.
    async fn edit_allowlist(
        &self,
        key: &FlagKey,
        env: &str,
        kind: AllowlistKind,
        subjects: &[String],
        edit: Edit,
    ) -> Result<(u64, i64)> {
        let outcome: std::result::Result<Option<(u64, i64)>, sqlx::Error> = on_db!(
            &self.db,
            |pool| {
                async {
                let mut tx = pool.begin().await?;
                // Bump first: it locks the flag row and tells us whether the flag exists.
                let revision: Option<i64> =
                    sqlx::query_scalar("UPDATE flags SET revision = revision + 1, updated_at_us = $2 WHERE key = $1 RETURNING revision")
                        .bind(key.as_str())
                        .bind(now_micros())
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(revision) = revision else { return Ok(None) };
                let mut changed = 0;
                for chunk in subjects.chunks(200) {
                    let mut q = match edit {
                        Edit::Add => {
                            let mut q = QueryBuilder::new("INSERT INTO allowlist_entries (flag_key, environment, kind, subject) ");
                            q.push_values(chunk, |mut b, s| {
                                b.push_bind(key.as_str()).push_bind(env).push_bind(kind.as_str()).push_bind(s);
                            });
                            q.push(" ON CONFLICT DO NOTHING");
                            q
                        }
                        Edit::Remove => {
                            let mut q = QueryBuilder::new("DELETE FROM allowlist_entries WHERE flag_key = ");
                            q.push_bind(key.as_str()).push(" AND environment = ").push_bind(env);
                            q.push(" AND kind = ").push_bind(kind.as_str()).push(" AND subject IN (");
                            let mut sep = q.separated(", ");
                            for s in chunk {
                                sep.push_bind(s);
                            }
                            q.push(")");
                            q
                        }
                    };
                    changed += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(Some((changed, revision)))
            }
            .await
            }
        );
        outcome?.ok_or_else(|| Error::not_found(format!("flag {key}")))
    }
}

#[async_trait]
impl FlagStore for SqlFlagStore {
    async fn create(&self, flag: &Flag, request_id: Option<&str>) -> Result<Flag> {
        if let Some(rid) = request_id {
            let key: Option<String> = on_db!(&self.db, |pool| sqlx::query_scalar(
                "SELECT key FROM flags WHERE create_request_id = $1"
            )
            .bind(rid)
            .fetch_optional(pool)
            .await)?;
            if let Some(key) = key {
                let key = FlagKey::parse(&key).map_err(|_| corrupt("key"))?;
                return self
                    .get(&key)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("flag {key}")));
            }
        }
        let envs = environments_json(flag)?;
        let now = now_micros();
        let inserted: std::result::Result<(), sqlx::Error> = on_db!(&self.db, |pool| {
            async {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO flags (key, description, stage, environments, revision, create_request_id, created_at_us, updated_at_us) \
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $6)",
                )
                .bind(flag.key.as_str())
                .bind(&flag.description)
                .bind(flag.stage.as_str())
                .bind(&envs)
                .bind(request_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                for (i, p) in flag.prerequisites.iter().enumerate() {
                    sqlx::query("INSERT INTO flag_prerequisites (flag_key, position, prerequisite_key) VALUES ($1, $2, $3)")
                        .bind(flag.key.as_str())
                        .bind(i as i32)
                        .bind(p.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
            .await
        });
        match inserted {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                // A concurrent retry with the same request_id won the race: answer as it did.
                if let Some(rid) = request_id {
                    let again: Option<String> = on_db!(&self.db, |pool| sqlx::query_scalar(
                        "SELECT key FROM flags WHERE create_request_id = $1"
                    )
                    .bind(rid)
                    .fetch_optional(pool)
                    .await)?;
                    if again.is_some() {
                        return self
                            .get(&flag.key)
                            .await?
                            .ok_or_else(|| Error::not_found(format!("flag {}", flag.key)));
                    }
                }
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("flag {} already exists", flag.key),
                ));
            }
            Err(e) => return Err(prerequisite_error(e)),
        }
        self.get(&flag.key)
            .await?
            .ok_or_else(|| Error::not_found(format!("flag {}", flag.key)))
    }

    async fn get(&self, key: &FlagKey) -> Result<Option<Flag>> {
        let sql = format!("SELECT {FLAG_COLUMNS} FROM flags WHERE key = $1");
        let row: Option<FlagRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(key.as_str())
            .fetch_optional(pool)
            .await)?;
        let Some(row) = row else { return Ok(None) };
        let prerequisites: Vec<String> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
            "SELECT prerequisite_key FROM flag_prerequisites WHERE flag_key = $1 ORDER BY position"
        )
        .bind(key.as_str())
        .fetch_all(pool)
        .await
        })?;
        row.into_flag(prerequisites).map(Some)
    }

    async fn list(
        &self,
        after: Option<&str>,
        limit: i64,
        stage: Option<Stage>,
    ) -> Result<Vec<Flag>> {
        let sql = format!(
            "SELECT {FLAG_COLUMNS} FROM flags WHERE key > $1 AND ($2 = '' OR stage = $2) ORDER BY key LIMIT $3"
        );
        let stage = stage.map(Stage::as_str).unwrap_or("");
        let rows: Vec<FlagRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(after.unwrap_or(""))
            .bind(stage)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        let Some(first) = rows.first().map(|r| r.key.clone()) else {
            return Ok(Vec::new());
        };
        let last = rows.last().map(|r| r.key.clone()).unwrap_or_default();
        let edges: Vec<(String, String)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
            "SELECT flag_key, prerequisite_key FROM flag_prerequisites WHERE flag_key >= $1 AND flag_key <= $2 ORDER BY flag_key, position"
        )
        .bind(&first)
        .bind(&last)
        .fetch_all(pool)
        .await
        })?;
        rows.into_iter()
            .map(|row| {
                let pre = edges
                    .iter()
                    .filter(|(f, _)| *f == row.key)
                    .map(|(_, p)| p.clone())
                    .collect();
                row.into_flag(pre)
            })
            .collect()
    }

    async fn update(&self, flag: &Flag, expected_revision: Option<i64>) -> Result<Flag> {
        let envs = environments_json(flag)?;
        let now = now_micros();
        let outcome: std::result::Result<Option<i64>, sqlx::Error> = on_db!(&self.db, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let revision: Option<i64> = sqlx::query_scalar(
                    "UPDATE flags SET description = $2, stage = $3, environments = $4, revision = revision + 1, updated_at_us = $5 \
                     WHERE key = $1 AND ($6 < 0 OR revision = $6) RETURNING revision",
                )
                .bind(flag.key.as_str())
                .bind(&flag.description)
                .bind(flag.stage.as_str())
                .bind(&envs)
                .bind(now)
                .bind(expected_revision.unwrap_or(-1))
                .fetch_optional(&mut *tx)
                .await?;
                if revision.is_none() {
                    return Ok(None);
                }
                sqlx::query("DELETE FROM flag_prerequisites WHERE flag_key = $1").bind(flag.key.as_str()).execute(&mut *tx).await?;
                for (i, p) in flag.prerequisites.iter().enumerate() {
                    sqlx::query("INSERT INTO flag_prerequisites (flag_key, position, prerequisite_key) VALUES ($1, $2, $3)")
                        .bind(flag.key.as_str())
                        .bind(i as i32)
                        .bind(p.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(revision)
            }
            .await
        });
        match outcome.map_err(prerequisite_error)? {
            Some(_) => self
                .get(&flag.key)
                .await?
                .ok_or_else(|| Error::not_found(format!("flag {}", flag.key))),
            None => match self.get(&flag.key).await? {
                Some(_) => Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "flag {} was changed by someone else; read it again",
                        flag.key
                    ),
                )),
                None => Err(Error::not_found(format!("flag {}", flag.key))),
            },
        }
    }

    async fn delete(&self, key: &FlagKey, expected_revision: Option<i64>) -> Result<()> {
        let dependants: Vec<String> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
            "SELECT flag_key FROM flag_prerequisites WHERE prerequisite_key = $1 ORDER BY flag_key"
        )
        .bind(key.as_str())
        .fetch_all(pool)
        .await
        })?;
        if !dependants.is_empty() {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!(
                    "flag {key} is a prerequisite of {}; remove it there first",
                    dependants.join(", ")
                ),
            ));
        }
        let deleted = on_db!(&self.db, |pool| sqlx::query(
            "DELETE FROM flags WHERE key = $1 AND ($2 < 0 OR revision = $2)"
        )
        .bind(key.as_str())
        .bind(expected_revision.unwrap_or(-1))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()));
        match deleted {
            Ok(1..) => Ok(()),
            Ok(0) => match self.get(key).await? {
                Some(_) => Err(Error::new(
                    ErrorKind::Conflict,
                    format!("flag {key} was changed by someone else; read it again"),
                )),
                None => Err(Error::not_found(format!("flag {key}"))),
            },
            // A prerequisite edge added between the check and the delete.
            Err(e) if is_foreign_key_violation(&e) => Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("flag {key} is a prerequisite of another flag"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn add_allowlist(
        &self,
        key: &FlagKey,
        env: &str,
        kind: AllowlistKind,
        subjects: &[String],
    ) -> Result<(u64, i64)> {
        self.edit_allowlist(key, env, kind, subjects, Edit::Add)
            .await
    }

    async fn remove_allowlist(
        &self,
        key: &FlagKey,
        env: &str,
        kind: AllowlistKind,
        subjects: &[String],
    ) -> Result<(u64, i64)> {
        self.edit_allowlist(key, env, kind, subjects, Edit::Remove)
            .await
    }

    async fn list_allowlist(
        &self,
        key: &FlagKey,
        env: &str,
        kind: AllowlistKind,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar(
            "SELECT subject FROM allowlist_entries WHERE flag_key = $1 AND environment = $2 AND kind = $3 AND subject > $4 \
             ORDER BY subject LIMIT $5"
        )
        .bind(key.as_str())
        .bind(env)
        .bind(kind.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(pool)
        .await
        })?)
    }

    async fn allowlist_entries(&self, key: &FlagKey) -> Result<Vec<AllowlistEntry>> {
        let rows = on_db!(&self.db, |pool| sqlx::query(
            "SELECT environment, kind, subject FROM allowlist_entries WHERE flag_key = $1"
        )
        .bind(key.as_str())
        .fetch_all(pool)
        .await
        .and_then(|rows| rows
            .iter()
            .map(|r| Ok((
                r.try_get::<String, _>(0)?,
                r.try_get::<String, _>(1)?,
                r.try_get::<String, _>(2)?
            )))
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()))?;
        rows.into_iter()
            .map(|(environment, kind, subject)| {
                let kind = AllowlistKind::parse(&kind).ok_or_else(|| corrupt("allowlist kind"))?;
                Ok(AllowlistEntry {
                    environment,
                    kind,
                    subject,
                })
            })
            .collect()
    }

    async fn prerequisite_edges(&self) -> Result<Vec<(String, String)>> {
        Ok(on_db!(&self.db, |pool| sqlx::query_as(
            "SELECT flag_key, prerequisite_key FROM flag_prerequisites"
        )
        .fetch_all(pool)
        .await)?)
    }
}

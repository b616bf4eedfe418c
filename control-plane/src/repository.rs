//! The resource repository: SQLite (bundled), the record of owners; the AS is the record of
//! ids. WAL with `synchronous=FULL`, so a write that returned survives `kill -9` and power
//! loss; one connection behind a mutex, used from async code through `spawn_blocking`.
//! Every write bumps `version`, which the filter's poll of `/filter-config` carries, with the
//! database's `generation`: a random id drawn when the database is created, so that a database
//! lost and created again cannot pass for the old one (the filter takes an empty table only
//! from the generation it already follows).
//!
//! Shapes are unique (two resources never match the same paths at the same precedence, as the
//! filter requires: `UriPattern::shape_key`); names are unique per owner only, as Keycloak keeps them
//! (a second user may deploy an application of the same name).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uma_pep_core::resource::{Enforcement, ScopesMode};

use uma_pep_core::uri_pattern::UriPattern;

/// The shape key of a stored `uri` and `exact` (`UriPattern::shape_key`); `None` when the uri is
/// no longer a pattern the filter takes (a path written before patterns existed, such as `/a*`).
pub fn stored_shape(uri: &str, exact: bool) -> Option<String> {
    UriPattern::parse(uri, exact).ok().map(|(_, p)| p.shape_key())
}

/// The seed's owner for resources nobody owns yet (an operator-only policy at the PDP).
pub const NOBODY: &str = "0000000000000";

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database lock poisoned")]
    Poisoned,
    #[error("database task failed: {0}")]
    Join(String),
    #[error("database schema version {0} is newer than this pepctl knows ({1})")]
    TooNew(i64, i64),
    #[error("stored scopes are not a JSON array: {0}")]
    Scopes(serde_json::Error),
    #[error("stored rules of resource {id} are unreadable: {problem}")]
    Rules { id: String, problem: String },
    #[error("resource {id}: {uri:?} is not a uri the filter takes (a path or a pattern)")]
    Uri { id: String, uri: String },
    #[error(
        "journal entry {seq} holds an unreadable resource ({problem}); the database was changed by hand: \
         delete the row from table intents once the AS and the repository agree"
    )]
    Intent { seq: i64, problem: String },
    #[error("cannot write the resource to the intent journal: {0}")]
    Journal(serde_json::Error),
    #[error("no randomness for a resource id: {0}")]
    Random(String),
    #[error(
        "the database has no generation id (table meta); it was changed by hand or by another program: \
         restore it from a backup, or move it away and let pepctl create a new one (then the filters keep \
         their last table until a resource is created)"
    )]
    NoGeneration,
}

/// A random id of 128 bits as 32 hex digits.
fn random_hex() -> Result<String, RepoError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| RepoError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The id of an open resource (scope `open`), which the AS never sees: a random version-4 UUID,
/// as the EOEPCA PEP v1.2 gave its open resources.
pub fn local_resource_id() -> Result<String, RepoError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| RepoError::Random(e.to_string()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

/// Where a resource came from: `file` ones are reconciled (and pruned) by `resources apply`,
/// `api` ones belong to users and are never pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    #[default]
    Api,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "file" {
            Source::File
        } else {
            Source::Api
        }
    }
}

/// A resource as the repository keeps it. The filter's rules (`exact`, `methods`,
/// `scopes_mode`, `enforcement`) carry the filter's names and are left out of JSON when they
/// hold their default (a journal entry written before they existed reads as the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResource {
    /// The AS resource id (`_id`): the key everywhere. An open resource is not registered at
    /// the AS and has a local id instead (`local_resource_id`).
    pub id: String,
    pub name: String,
    /// The path or pattern (`uma_pep_core::uri_pattern`), in its canonical spelling.
    pub uri: String,
    /// Only the path itself, not what is below it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
    /// Method → the scopes it needs (replacing the filter's `method_scopes` for this resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "ScopesMode::is_default")]
    pub scopes_mode: ScopesMode,
    #[serde(default, skip_serializing_if = "Enforcement::is_default")]
    pub enforcement: Enforcement,
    pub owner: String,
    pub scopes: Vec<String>,
    pub description: Option<String>,
    pub source: Source,
    /// Unix seconds when the AS expires the registration (Gluu), if it said.
    pub as_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Schema steps, applied in order; `schema_version` holds how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE resources (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        uri TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        scopes TEXT NOT NULL,
        description TEXT,
        source TEXT NOT NULL CHECK (source IN ('file','api')),
        as_expires_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX resources_owner ON resources(owner);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters (name, value) VALUES ('version', 0);",
    // Names unique per owner instead of everywhere; SQLite drops a column constraint only by
    // copying the table. `meta` holds the generation (written in `ensure_generation`).
    "CREATE TABLE resources_by_owner (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        uri TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        scopes TEXT NOT NULL,
        description TEXT,
        source TEXT NOT NULL CHECK (source IN ('file','api')),
        as_expires_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (owner, name)
    );
    INSERT INTO resources_by_owner SELECT id, name, uri, owner, scopes, description, source,
        as_expires_at, created_at, updated_at FROM resources;
    DROP TABLE resources;
    ALTER TABLE resources_by_owner RENAME TO resources;
    CREATE INDEX resources_name ON resources(name);
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // The intent journal: a change about to be made at the AS, committed before the AS call
    // and removed in the transaction that writes its result here, so that a crash between the
    // two leaves a row that `serve` finishes or rolls back at its next start.
    "CREATE TABLE intents (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL CHECK (op IN ('create','update','delete')),
        resource_id TEXT,
        name TEXT NOT NULL,
        uri TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // Resource rules: a uri may be a pattern, and two resources may share a uri (one `exact`,
    // one not); what stays unique is the shape (`UriPattern::shape_key`). Every uri so far was a
    // path, whose shape is the path with the rest (`SHAPES_FROM_PATHS` then recomputes each
    // with the filter's parser).
    "CREATE TABLE resources_v4 (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        uri TEXT NOT NULL,
        shape TEXT NOT NULL UNIQUE,
        exact INTEGER NOT NULL DEFAULT 0,
        methods TEXT,
        scopes_mode TEXT NOT NULL DEFAULT 'all',
        enforcement TEXT NOT NULL DEFAULT 'enforcing',
        owner TEXT NOT NULL,
        scopes TEXT NOT NULL,
        description TEXT,
        source TEXT NOT NULL CHECK (source IN ('file','api')),
        as_expires_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (owner, name)
    );
    INSERT INTO resources_v4 (id, name, uri, shape, owner, scopes, description, source, as_expires_at,
        created_at, updated_at)
      SELECT id, name, uri, CASE WHEN uri = '/' THEN '/**' ELSE uri || '/**' END, owner, scopes,
        description, source, as_expires_at, created_at, updated_at FROM resources;
    DROP TABLE resources;
    ALTER TABLE resources_v4 RENAME TO resources;
    CREATE INDEX resources_name ON resources(name);
    CREATE INDEX resources_owner ON resources(owner);
    CREATE INDEX resources_uri ON resources(uri);",
];

/// The migration after which every stored shape is recomputed with the filter's parser.
const SHAPES_FROM_PATHS: usize = 4;

/// What a journal entry was about to do at the AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentOp {
    Create,
    Update,
    Delete,
}

impl IntentOp {
    fn as_str(self) -> &'static str {
        match self {
            IntentOp::Create => "create",
            IntentOp::Update => "update",
            IntentOp::Delete => "delete",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "create" => Some(IntentOp::Create),
            "update" => Some(IntentOp::Update),
            "delete" => Some(IntentOp::Delete),
            _ => None,
        }
    }
}

/// A change begun at the AS and not (yet) written here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub seq: i64,
    pub op: IntentOp,
    /// The resource's id (the AS id); `None` for a create, whose id the AS had not given yet.
    pub resource_id: Option<String>,
    /// The name and path the AS was about to hold.
    pub name: String,
    pub uri: String,
    /// A create: the resource as it was to be stored (its id empty). An update or a delete:
    /// the resource as the repository held it before.
    pub state: StoredResource,
}

pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[derive(Clone)]
pub struct Repository {
    conn: Arc<Mutex<Connection>>,
}

/// A row, with the columns still to read as JSON: scopes, methods, scopes_mode, enforcement.
type RawRow = (StoredResource, String, Option<String>, String, String);

fn row_to_resource(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        StoredResource {
            id: row.get("id")?,
            name: row.get("name")?,
            uri: row.get("uri")?,
            exact: row.get("exact")?,
            methods: None,
            scopes_mode: ScopesMode::All,
            enforcement: Enforcement::Enforcing,
            owner: row.get("owner")?,
            scopes: Vec::new(),
            description: row.get("description")?,
            source: Source::parse(&row.get::<_, String>("source")?),
            as_expires_at: row.get("as_expires_at")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        },
        row.get("scopes")?,
        row.get("methods")?,
        row.get("scopes_mode")?,
        row.get("enforcement")?,
    ))
}

fn finish(raw: RawRow) -> Result<StoredResource, RepoError> {
    let (mut r, scopes, methods, scopes_mode, enforcement) = raw;
    r.scopes = serde_json::from_str(&scopes).map_err(RepoError::Scopes)?;
    let unreadable =
        |id: &str, e: serde_json::Error| RepoError::Rules { id: id.to_string(), problem: e.to_string() };
    if let Some(m) = methods {
        r.methods = Some(serde_json::from_str(&m).map_err(|e| unreadable(&r.id, e))?);
    }
    r.scopes_mode = serde_json::from_value(scopes_mode.into()).map_err(|e| unreadable(&r.id, e))?;
    r.enforcement = serde_json::from_value(enforcement.into()).map_err(|e| unreadable(&r.id, e))?;
    Ok(r)
}

/// A rule value as its column holds it: the JSON string's text (`all`, `permissive`).
fn as_text(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Writes a record, replacing the one with the same id. Its shape must be free: a second
/// resource of one shape is refused here whatever checked before.
fn write_record(tx: &rusqlite::Transaction<'_>, r: &StoredResource) -> Result<(), RepoError> {
    let shape = stored_shape(&r.uri, r.exact)
        .ok_or_else(|| RepoError::Uri { id: r.id.clone(), uri: r.uri.clone() })?;
    let methods = match &r.methods {
        Some(m) => Some(serde_json::to_string(m).map_err(RepoError::Journal)?),
        None => None,
    };
    tx.execute(
        "INSERT INTO resources (id, name, uri, shape, exact, methods, scopes_mode, enforcement, owner, scopes,
           description, source, as_expires_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, uri = excluded.uri, shape = excluded.shape,
           exact = excluded.exact, methods = excluded.methods, scopes_mode = excluded.scopes_mode,
           enforcement = excluded.enforcement,
           owner = excluded.owner, scopes = excluded.scopes, description = excluded.description,
           source = excluded.source, as_expires_at = excluded.as_expires_at,
           updated_at = excluded.updated_at",
        params![
            r.id,
            r.name,
            r.uri,
            shape,
            r.exact,
            methods,
            as_text(&r.scopes_mode),
            as_text(&r.enforcement),
            r.owner,
            scopes_json(&r.scopes),
            r.description,
            r.source.as_str(),
            r.as_expires_at,
            r.created_at,
            r.updated_at
        ],
    )?;
    Ok(())
}

fn bump_version(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute("UPDATE counters SET value = value + 1 WHERE name = 'version'", [])?;
    Ok(())
}

fn scopes_json(scopes: &[String]) -> String {
    serde_json::Value::from(scopes.to_vec()).to_string()
}

const COLUMNS: &str =
    "id, name, uri, exact, methods, scopes_mode, enforcement, owner, scopes, description, source, \
     as_expires_at, created_at, updated_at";

impl Repository {
    pub fn open(path: &Path) -> Result<Self, RepoError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self, RepoError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, RepoError> {
        // WAL lets readers run beside the writer; FULL syncs the WAL at every commit, which is
        // what makes an acknowledged write survive a crash (NORMAL would not in WAL mode).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        ensure_generation(&conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, RepoError>) -> Result<T, RepoError> {
        let mut guard = self.conn.lock().map_err(|_| RepoError::Poisoned)?;
        f(&mut guard)
    }

    /// Runs `f` on a blocking thread: SQLite calls block (fsync) and must not stall the
    /// async workers that serve other requests.
    pub async fn run<T, F>(&self, f: F) -> Result<T, RepoError>
    where
        T: Send + 'static,
        F: FnOnce(&Repository) -> Result<T, RepoError> + Send + 'static,
    {
        let repo = self.clone();
        tokio::task::spawn_blocking(move || f(&repo)).await.map_err(|e| RepoError::Join(e.to_string()))?
    }

    pub fn schema_version(&self) -> Result<i64, RepoError> {
        self.with(|c| Ok(c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?))
    }

    /// The database's generation: drawn once, when the database (or its `meta` table) was
    /// created, and never changed.
    pub fn generation(&self) -> Result<String, RepoError> {
        self.with(|c| read_generation(c))
    }

    pub fn version(&self) -> Result<i64, RepoError> {
        self.with(|c| Ok(c.query_row("SELECT value FROM counters WHERE name = 'version'", [], |r| r.get(0))?))
    }

    pub fn list(&self) -> Result<Vec<StoredResource>, RepoError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM resources ORDER BY uri"))?;
            let rows = stmt.query_map([], row_to_resource)?;
            rows.map(|r| finish(r?)).collect()
        })
    }

    /// The resources, the version they belong to and the generation, read in one transaction
    /// so that they are consistent.
    /// The repository's version and generation alone: what changes with every write, cheap
    /// enough to be read every second.
    pub fn stamp(&self) -> Result<(i64, String), RepoError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let version: i64 =
                tx.query_row("SELECT value FROM counters WHERE name = 'version'", [], |r| r.get(0))?;
            let generation = read_generation(&tx)?;
            tx.commit()?;
            Ok((version, generation))
        })
    }

    pub fn snapshot(&self) -> Result<Snapshot, RepoError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let version: i64 =
                tx.query_row("SELECT value FROM counters WHERE name = 'version'", [], |r| r.get(0))?;
            let generation = read_generation(&tx)?;
            let resources = {
                let mut stmt = tx.prepare(&format!("SELECT {COLUMNS} FROM resources ORDER BY uri"))?;
                let rows = stmt.query_map([], row_to_resource)?;
                rows.map(|r| finish(r?)).collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            Ok(Snapshot { resources, version, generation })
        })
    }

    pub fn list_by_owner(&self, owner: &str) -> Result<Vec<StoredResource>, RepoError> {
        self.with(|c| {
            let mut stmt =
                c.prepare(&format!("SELECT {COLUMNS} FROM resources WHERE owner = ?1 ORDER BY uri"))?;
            let rows = stmt.query_map([owner], row_to_resource)?;
            rows.map(|r| finish(r?)).collect()
        })
    }

    fn get_by(&self, column: &str, value: &str) -> Result<Option<StoredResource>, RepoError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM resources WHERE {column} = ?1"),
                [value],
                row_to_resource,
            )
            .optional()?
            .map(finish)
            .transpose()
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<StoredResource>, RepoError> {
        self.get_by("id", id)
    }

    /// Every resource of that name (names are unique per owner only), by path.
    pub fn list_by_name(&self, name: &str) -> Result<Vec<StoredResource>, RepoError> {
        self.with(|c| {
            let mut stmt =
                c.prepare(&format!("SELECT {COLUMNS} FROM resources WHERE name = ?1 ORDER BY uri"))?;
            let rows = stmt.query_map([name], row_to_resource)?;
            rows.map(|r| finish(r?)).collect()
        })
    }

    /// The resource of that owner and name, if any.
    pub fn get_by_owner_and_name(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, RepoError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM resources WHERE owner = ?1 AND name = ?2"),
                [owner, name],
                row_to_resource,
            )
            .optional()?
            .map(finish)
            .transpose()
        })
    }

    /// The resource of that name among those a file (`resources apply`) manages; a file names
    /// each of its resources once.
    pub fn get_file_resource_by_name(&self, name: &str) -> Result<Option<StoredResource>, RepoError> {
        Ok(self.list_by_name(name)?.into_iter().find(|r| r.source == Source::File))
    }

    /// The resources registered at exactly this spelling (two when one is `exact` and one is
    /// not), the exact one first.
    pub fn list_by_uri(&self, uri: &str) -> Result<Vec<StoredResource>, RepoError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM resources WHERE uri = ?1 ORDER BY exact DESC, id"
            ))?;
            let rows = stmt.query_map([uri], row_to_resource)?;
            rows.map(|r| finish(r?)).collect()
        })
    }

    /// The resource at this spelling; of two, the `exact` one, which is the one the filter
    /// picks for that very path.
    pub fn get_by_uri(&self, uri: &str) -> Result<Option<StoredResource>, RepoError> {
        Ok(self.list_by_uri(uri)?.into_iter().next())
    }

    /// The resource of this shape (`UriPattern::shape_key`), if any: at most one.
    pub fn get_by_shape(&self, shape: &str) -> Result<Option<StoredResource>, RepoError> {
        self.get_by("shape", shape)
    }

    /// Inserts a resource, or replaces the one with the same id.
    pub fn upsert(&self, r: &StoredResource) -> Result<(), RepoError> {
        self.with(|c| {
            let tx = c.transaction()?;
            write_record(&tx, r)?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Moves a record to a new AS id (the AS lost the resource and it was re-created).
    pub fn replace_id(&self, old_id: &str, r: &StoredResource) -> Result<(), RepoError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM resources WHERE id = ?1", [old_id])?;
            write_record(&tx, r)?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Deletes by id; `false` when there was nothing to delete.
    pub fn delete(&self, id: &str) -> Result<bool, RepoError> {
        self.delete_settling(id, None)
    }

    /// Deletes by id and, in the same transaction, the journal entry `seq` that announced it.
    pub fn delete_settling(&self, id: &str, seq: Option<i64>) -> Result<bool, RepoError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM resources WHERE id = ?1", [id])?;
            if n > 0 {
                bump_version(&tx)?;
            }
            if let Some(seq) = seq {
                tx.execute("DELETE FROM intents WHERE seq = ?1", [seq])?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// Inserts or replaces a resource and, in the same transaction, removes the journal entry
    /// `seq` that announced the change: either both are on disk or neither is.
    pub fn upsert_settling(&self, r: &StoredResource, seq: i64) -> Result<(), RepoError> {
        self.with(|c| {
            let tx = c.transaction()?;
            write_record(&tx, r)?;
            bump_version(&tx)?;
            tx.execute("DELETE FROM intents WHERE seq = ?1", [seq])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Journals a change about to be made at the AS, committed (and synced) before the call;
    /// its sequence number.
    pub fn record_intent(
        &self,
        op: IntentOp,
        resource_id: Option<&str>,
        name: &str,
        uri: &str,
        state: &StoredResource,
    ) -> Result<i64, RepoError> {
        let state = serde_json::to_string(state).map_err(RepoError::Journal)?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO intents (op, resource_id, name, uri, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![op.as_str(), resource_id, name, uri, state, now_s()],
            )?;
            let seq = tx.last_insert_rowid();
            tx.commit()?;
            Ok(seq)
        })
    }

    /// Forgets a journal entry whose change the AS refused or that was undone there.
    pub fn clear_intent(&self, seq: i64) -> Result<(), RepoError> {
        self.with(|c| {
            c.execute("DELETE FROM intents WHERE seq = ?1", [seq])?;
            Ok(())
        })
    }

    /// The journal entries not settled, oldest first.
    pub fn pending_intents(&self) -> Result<Vec<Intent>, RepoError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT seq, op, resource_id, name, uri, state FROM intents ORDER BY seq")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (seq, op, resource_id, name, uri, state) = row?;
                let op = IntentOp::parse(&op)
                    .ok_or_else(|| RepoError::Intent { seq, problem: format!("unknown op {op:?}") })?;
                let state = serde_json::from_str(&state)
                    .map_err(|e| RepoError::Intent { seq, problem: e.to_string() })?;
                Ok(Intent { seq, op, resource_id, name, uri, state })
            })
            .collect()
        })
    }
}

/// The resources of `/filter-config`, with the version and generation they belong to.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub resources: Vec<StoredResource>,
    pub version: i64,
    pub generation: String,
}

fn read_generation(c: &Connection) -> Result<String, RepoError> {
    c.query_row("SELECT value FROM meta WHERE name = 'generation'", [], |r| r.get::<_, String>(0))
        .optional()?
        .filter(|g| !g.is_empty())
        .ok_or(RepoError::NoGeneration)
}

/// Draws the generation the first time the database is opened by a pepctl that knows them;
/// never replaces one.
fn ensure_generation(conn: &Connection) -> Result<(), RepoError> {
    conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('generation', ?1)", [random_hex()?])?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), RepoError> {
    let tx = conn.transaction()?;
    tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", [])?;
    let current: Option<i64> =
        tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
    let current = match current {
        Some(v) => v,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", [])?;
            0
        }
    };
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(RepoError::TooNew(current, known));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        if i + 1 == SHAPES_FROM_PATHS {
            reshape(&tx)?;
        }
        tx.execute("UPDATE schema_version SET version = ?1", [i as i64 + 1])?;
    }
    tx.commit()?;
    Ok(())
}

/// Recomputes the shape of every stored resource with the filter's parser. A path stored before
/// patterns existed keeps its meaning unless a whole segment of it is `*` (a sub-delimiter, kept
/// by the path rules): `/b/*` now reads as a one-segment pattern, and is named in a warning (a
/// `*` inside a segment, `/a*`, stays a literal character).
fn reshape(tx: &rusqlite::Transaction<'_>) -> Result<(), RepoError> {
    let rows: Vec<(String, String, bool)> = {
        let mut stmt = tx.prepare("SELECT id, uri, exact FROM resources")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, uri, exact) in rows {
        match stored_shape(&uri, exact) {
            Some(shape) => {
                if uri.split('/').any(|s| s == "*" || s == "**") {
                    tracing::warn!(
                        resource = %id, uri = %uri,
                        "this resource's path was a literal and now reads as a pattern (`*` is one segment): \
                         move it (operator: PATCH icon_uri) if that is not what it should protect"
                    );
                }
                tx.execute("UPDATE resources SET shape = ?1 WHERE id = ?2", params![shape, id])?;
            }
            None => tracing::warn!(
                resource = %id, uri = %uri,
                "this resource's uri is no path or pattern the filter takes (a `*`, `{{` or `}}` inside a segment): \
                 move it (operator: PATCH icon_uri) or delete it, or the filter refuses the table"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(id: &str, name: &str, uri: &str, owner: &str) -> StoredResource {
        StoredResource {
            id: id.into(),
            name: name.into(),
            uri: uri.into(),
            owner: owner.into(),
            scopes: vec!["protected_get".into()],
            description: Some("d".into()),
            source: Source::File,
            as_expires_at: None,
            created_at: 1,
            updated_at: 1,
            ..StoredResource::default()
        }
    }

    #[test]
    fn crud_and_version() {
        let repo = Repository::open_in_memory().unwrap();
        assert_eq!(repo.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(repo.version().unwrap(), 0);
        repo.upsert(&res("a1", "A", "/a", "alice")).unwrap();
        repo.upsert(&res("b1", "B", "/b", "bob")).unwrap();
        assert_eq!(repo.version().unwrap(), 2);
        assert_eq!(repo.get("a1").unwrap().unwrap().owner, "alice");
        assert_eq!(repo.list_by_name("B").unwrap()[0].id, "b1");
        assert_eq!(repo.get_by_owner_and_name("bob", "B").unwrap().unwrap().id, "b1");
        assert!(repo.get_by_owner_and_name("alice", "B").unwrap().is_none());
        assert_eq!(repo.get_by_uri("/b").unwrap().unwrap().scopes, vec!["protected_get"]);
        assert_eq!(repo.list_by_owner("alice").unwrap().len(), 1);
        let mut moved = res("a1", "A", "/a", "carol");
        moved.updated_at = 2;
        repo.upsert(&moved).unwrap();
        assert_eq!(repo.get("a1").unwrap().unwrap().owner, "carol");
        assert_eq!(repo.get("a1").unwrap().unwrap().created_at, 1);
        repo.replace_id("a1", &res("a2", "A", "/a", "carol")).unwrap();
        assert!(repo.get("a1").unwrap().is_none());
        assert!(repo.get("a2").unwrap().is_some());
        assert!(repo.delete("a2").unwrap());
        assert!(!repo.delete("a2").unwrap());
        let snapshot = repo.snapshot().unwrap();
        assert_eq!(snapshot.resources.len(), 1);
        assert_eq!(snapshot.version, 5);
        assert_eq!(snapshot.generation, repo.generation().unwrap());
    }

    #[test]
    fn an_intent_is_settled_with_the_write_it_announced() {
        let repo = Repository::open_in_memory().unwrap();
        let a = res("a1", "A", "/a", "alice");
        let seq = repo.record_intent(IntentOp::Create, None, "A", "/a", &a).unwrap();
        let pending = repo.pending_intents().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].seq, pending[0].op, &pending[0].state), (seq, IntentOp::Create, &a));
        assert_eq!(pending[0].resource_id, None);
        // A write that fails leaves the entry (and no record).
        let clash = repo.record_intent(IntentOp::Create, None, "B", "/a", &a).unwrap();
        repo.upsert_settling(&a, seq).unwrap();
        assert!(repo.upsert_settling(&res("b1", "B", "/a", "bob"), clash).is_err());
        assert_eq!(repo.pending_intents().unwrap().iter().map(|i| i.seq).collect::<Vec<_>>(), [clash]);
        repo.clear_intent(clash).unwrap();
        let del = repo.record_intent(IntentOp::Delete, Some("a1"), "A", "/a", &a).unwrap();
        assert!(repo.delete_settling("a1", Some(del)).unwrap());
        assert!(repo.pending_intents().unwrap().is_empty());
        assert!(repo.get("a1").unwrap().is_none());
    }

    #[test]
    fn uris_are_unique_and_names_unique_per_owner() {
        let repo = Repository::open_in_memory().unwrap();
        repo.upsert(&res("a1", "A", "/a", "alice")).unwrap();
        assert!(repo.upsert(&res("x", "A", "/other", "alice")).is_err());
        assert!(repo.upsert(&res("y", "Other", "/a", "alice")).is_err());
        // A failed write does not bump the version.
        assert_eq!(repo.version().unwrap(), 1);
        // Another owner may use the name.
        repo.upsert(&res("b1", "A", "/b", "bob")).unwrap();
        assert_eq!(repo.list_by_name("A").unwrap().len(), 2);
        let mut api = res("c1", "A", "/c", "carol");
        api.source = Source::Api;
        repo.upsert(&api).unwrap();
        assert_eq!(repo.get_file_resource_by_name("A").unwrap().unwrap().id, "a1");
    }

    #[test]
    fn the_generation_is_drawn_once_per_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepctl.db");
        let first = Repository::open(&path).unwrap().generation().unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(Repository::open(&path).unwrap().generation().unwrap(), first, "kept on reopening");
        // A lost database comes back with another one.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("pepctl.db{suffix}")));
        }
        assert_ne!(Repository::open(&path).unwrap().generation().unwrap(), first);
        assert_ne!(
            Repository::open_in_memory().unwrap().generation().unwrap(),
            Repository::open_in_memory().unwrap().generation().unwrap()
        );
    }

    /// A transaction on a database holding the first `version` migrations, as an older pepctl
    /// left it.
    fn at_schema(c: &mut Connection, version: usize) -> rusqlite::Transaction<'_> {
        let tx = c.transaction().unwrap();
        tx.execute_batch(&format!(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES ({version});"
        ))
        .unwrap();
        for sql in &MIGRATIONS[..version] {
            tx.execute_batch(sql).unwrap();
        }
        tx
    }

    #[test]
    fn a_database_of_the_first_schema_is_migrated_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepctl.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let tx = at_schema(&mut c, 1);
            tx.execute(
                "INSERT INTO resources (id, name, uri, owner, scopes, description, source, created_at, updated_at)
                 VALUES ('a1', 'A', '/a', 'alice', '[\"protected_get\"]', 'd', 'file', 1, 1)",
                [],
            )
            .unwrap();
            bump_version(&tx).unwrap();
            tx.commit().unwrap();
        }
        let repo = Repository::open(&path).unwrap();
        assert_eq!(repo.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(repo.get("a1").unwrap().unwrap().owner, "alice");
        assert_eq!(repo.version().unwrap(), 1);
        assert_eq!(repo.generation().unwrap().len(), 32);
        repo.upsert(&res("b1", "A", "/b", "bob")).unwrap();
    }

    #[test]
    fn shapes_are_unique_and_rules_come_back_as_written() {
        let repo = Repository::open_in_memory().unwrap();
        let mut orders = res("o1", "Order", "/orders/{id}", "alice");
        let mut methods = BTreeMap::new();
        methods.insert("GET".to_string(), vec!["read".to_string()]);
        methods.insert("PROPFIND".to_string(), vec!["dav".to_string(), "read".to_string()]);
        orders.methods = Some(methods);
        orders.scopes_mode = ScopesMode::Any;
        orders.enforcement = Enforcement::Permissive;
        repo.upsert(&orders).unwrap();
        assert_eq!(repo.get("o1").unwrap().unwrap(), orders);
        assert_eq!(repo.get_by_uri("/orders/{id}").unwrap().unwrap().id, "o1");
        // Another spelling of the same shape is refused by the database itself.
        assert!(repo.upsert(&res("o2", "Other", "/orders/*", "bob")).is_err());
        assert_eq!(repo.get_by_shape("/orders/* (exact)").unwrap().unwrap().id, "o1");
        // `/a` and `/a` exact are two shapes; `/a/**` is the shape of `/a`.
        repo.upsert(&res("a1", "A", "/a", "alice")).unwrap();
        let mut exact = res("a2", "A exact", "/a", "alice");
        exact.exact = true;
        repo.upsert(&exact).unwrap();
        assert!(repo.upsert(&res("a3", "A rest", "/a/**", "alice")).is_err());
        assert_eq!(
            repo.list_by_uri("/a").unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a2", "a1"]
        );
        assert_eq!(
            repo.get_by_uri("/a").unwrap().unwrap().id,
            "a2",
            "the exact one: the filter's pick at /a"
        );
        // A uri the filter does not take is never written.
        assert!(matches!(repo.upsert(&res("x", "X", "/x{", "alice")), Err(RepoError::Uri { .. })));
        // The journal keeps the rules, and reads an entry of before them as the defaults.
        let seq = repo.record_intent(IntentOp::Create, None, "Order", "/orders/{id}", &orders).unwrap();
        assert_eq!(repo.pending_intents().unwrap()[0].state, orders);
        repo.clear_intent(seq).unwrap();
        let old: StoredResource = serde_json::from_str(
            r#"{"id":"","name":"n","uri":"/n","owner":"o","scopes":[],"description":null,"source":"api",
                "as_expires_at":null,"created_at":1,"updated_at":1}"#,
        )
        .unwrap();
        assert_eq!(
            (old.exact, old.methods, old.scopes_mode, old.enforcement),
            (false, None, ScopesMode::All, Enforcement::Enforcing)
        );
        let json = serde_json::to_value(res("d", "D", "/d", "o")).unwrap();
        for key in ["exact", "methods", "scopes_mode", "enforcement"] {
            assert!(json.get(key).is_none(), "{key} omitted when default: {json}");
        }
    }

    #[test]
    fn a_database_of_the_third_schema_gets_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepctl.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let tx = at_schema(&mut c, 3);
            for (id, uri) in [("r", "/"), ("a", "/a"), ("star", "/b/*"), ("bad", "/c*")] {
                tx.execute(
                    "INSERT INTO resources (id, name, uri, owner, scopes, source, created_at, updated_at)
                     VALUES (?1, ?1, ?2, 'o', '[]', 'file', 1, 1)",
                    [id, uri],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let repo = Repository::open(&path).unwrap();
        assert_eq!(repo.list().unwrap().len(), 4);
        assert_eq!(repo.get_by_shape("/**").unwrap().unwrap().id, "r");
        assert_eq!(repo.get_by_shape("/a/**").unwrap().unwrap().id, "a");
        // A path of before patterns whose segment is `*` is now the pattern it spells.
        assert_eq!(repo.get_by_shape("/b/* (exact)").unwrap().unwrap().id, "star");
        assert!(repo.upsert(&res("a2", "A2", "/a/**", "o")).is_err());
        repo.upsert(&res("a3", "A3", "/a/{x}", "o")).unwrap();
    }

    #[test]
    fn reopening_keeps_data_and_does_not_remigrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepctl.db");
        {
            let repo = Repository::open(&path).unwrap();
            repo.upsert(&res("a1", "A", "/a", "alice")).unwrap();
        }
        let repo = Repository::open(&path).unwrap();
        assert_eq!(repo.get("a1").unwrap().unwrap().name, "A");
        assert_eq!(repo.version().unwrap(), 1);
        let mode: String = repo.with(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = repo.with(|c| Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?)).unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepctl.db");
        drop(Repository::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute("UPDATE schema_version SET version = 99", []).unwrap();
        drop(c);
        assert!(matches!(Repository::open(&path), Err(RepoError::TooNew(99, _))));
    }

    #[tokio::test]
    async fn concurrent_writers_through_spawn_blocking() {
        let repo = Repository::open_in_memory().unwrap();
        let mut handles = Vec::new();
        for i in 0..20 {
            let repo = repo.clone();
            handles.push(tokio::spawn(async move {
                repo.run(move |r| r.upsert(&res(&format!("id{i}"), &format!("n{i}"), &format!("/p{i}"), "o")))
                    .await
            }));
        }
        for h in handles {
            h.await.unwrap().unwrap();
        }
        assert_eq!(repo.list().unwrap().len(), 20);
        assert_eq!(repo.version().unwrap(), 20);
    }
}

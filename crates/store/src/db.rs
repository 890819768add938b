//! One way to run a statement on either database, written once: [`query`], [`query_as`] and
//! [`query_scalar`] mirror sqlx's, but collect their arguments as [`Value`]s and pick the
//! driver only when they run, on the store's pool or inside a [`Tx`]. Rows decode through each
//! driver's own `FromRow` (no conversion to a common row type, unlike sqlx's `Any` driver,
//! which also cannot read SQLite's `BOOLEAN` columns).

use std::borrow::Cow;
use std::marker::PhantomData;

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Database, Decode, Encode, FromRow, Postgres, SqlSafeStr, SqlStr, Sqlite, Type};

use crate::{Pool, Result, Store};

/// A statement's argument, borrowed where it can be.
#[derive(Debug, Clone)]
pub(crate) enum Value<'q> {
    Int(Option<i64>),
    Bool(Option<bool>),
    Text(Option<Cow<'q, str>>),
    Bytes(Option<Cow<'q, [u8]>>),
}

macro_rules! value_from {
    ($($ty:ty => |$v:ident| $make:expr;)*) => {
        $(impl<'q> From<$ty> for Value<'q> {
            fn from($v: $ty) -> Self {
                $make
            }
        })*
    };
}

value_from! {
    i64 => |v| Value::Int(Some(v));
    Option<i64> => |v| Value::Int(v);
    i32 => |v| Value::Int(Some(i64::from(v)));
    Option<i32> => |v| Value::Int(v.map(i64::from));
    bool => |v| Value::Bool(Some(v));
    Option<bool> => |v| Value::Bool(v);
    &'q str => |v| Value::Text(Some(Cow::Borrowed(v)));
    &'q String => |v| Value::Text(Some(Cow::Borrowed(v.as_str())));
    String => |v| Value::Text(Some(Cow::Owned(v)));
    Option<&'q str> => |v| Value::Text(v.map(Cow::Borrowed));
    Option<&'q String> => |v| Value::Text(v.map(|s| Cow::Borrowed(s.as_str())));
    Option<String> => |v| Value::Text(v.map(Cow::Owned));
    &'q Option<String> => |v| Value::Text(v.as_deref().map(Cow::Borrowed));
    &'q [u8] => |v| Value::Bytes(Some(Cow::Borrowed(v)));
    &'q Vec<u8> => |v| Value::Bytes(Some(Cow::Borrowed(v.as_slice())));
    Vec<u8> => |v| Value::Bytes(Some(Cow::Owned(v)));
    Option<&'q [u8]> => |v| Value::Bytes(v.map(Cow::Borrowed));
}

/// What a TEXT column can be parsed into: enums by their names, maps by their JSON.
pub(crate) trait FromText: Sized {
    fn from_text(text: &str) -> std::result::Result<Self, String>;
}

/// A TEXT column read as `T` (`#[sqlx(try_from = "Text<T>")]`, with `text_columns!(T)`), so
/// rows hold the types they mean and a bad value is a decode error naming its column. The
/// parse happens while decoding: sqlx's derive cannot print a `TryFrom` error of its own.
#[derive(Debug)]
pub(crate) struct Text<T>(pub(crate) T);

impl<T: FromText> FromText for Option<T> {
    fn from_text(text: &str) -> std::result::Result<Self, String> {
        T::from_text(text).map(Some)
    }
}

impl<DB: Database, T> Type<DB> for Text<T>
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database, T: FromText + MaybeNull> Decode<'r, DB> for Text<T>
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        if sqlx::ValueRef::is_null(&value) {
            return T::when_null()
                .map(Text)
                .ok_or_else(|| "NULL where a value is required".into());
        }
        let text = <&'r str as Decode<'r, DB>>::decode(value)?;
        Ok(Text(T::from_text(text)?))
    }
}

/// What a NULL column reads as: `None` for an `Option`, an error for anything else.
pub(crate) trait MaybeNull: Sized {
    fn when_null() -> Option<Self> {
        None
    }
}

impl<T> MaybeNull for Option<T> {
    fn when_null() -> Option<Self> {
        Some(None)
    }
}

/// Lets each type be a row's field read through [`Text`].
macro_rules! text_columns {
    ($($ty:ty),* $(,)?) => {
        $(
            impl $crate::db::MaybeNull for $ty {}

            impl From<$crate::db::Text<$ty>> for $ty {
                fn from(text: $crate::db::Text<$ty>) -> Self {
                    text.0
                }
            }

            impl From<$crate::db::Text<Option<$ty>>> for Option<$ty> {
                fn from(text: $crate::db::Text<Option<$ty>>) -> Self {
                    text.0
                }
            }
        )*
    };
}
pub(crate) use text_columns;

/// A row type both drivers can decode (what `#[derive(sqlx::FromRow)]` and tuples give).
pub(crate) trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Where a statement runs: a pool (a connection for this statement alone) or a transaction's
/// connection.
pub(crate) enum Target<'c> {
    SqlitePool(&'c sqlx::SqlitePool),
    PgPool(&'c sqlx::PgPool),
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl<'c> From<&'c Pool> for Target<'c> {
    fn from(pool: &'c Pool) -> Self {
        match pool {
            Pool::Sqlite(pool) => Target::SqlitePool(pool),
            Pool::Postgres(pool) => Target::PgPool(pool),
        }
    }
}

impl<'c> From<&'c sqlx::SqlitePool> for Target<'c> {
    fn from(pool: &'c sqlx::SqlitePool) -> Self {
        Target::SqlitePool(pool)
    }
}

impl<'c> From<&'c sqlx::PgPool> for Target<'c> {
    fn from(pool: &'c sqlx::PgPool) -> Self {
        Target::PgPool(pool)
    }
}

impl<'c> From<&'c mut Tx> for Target<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        match tx {
            Tx::Sqlite(tx) => Target::Sqlite(tx),
            Tx::Postgres(tx) => Target::Postgres(tx),
        }
    }
}

/// A transaction on either database. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }
}

impl Store {
    /// What a claim's subquery ends with: PostgreSQL locks the row it picks and passes over
    /// rows another claim holds; SQLite runs one writer at a time, so the statement is the
    /// claim.
    pub(crate) fn skip_locked(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "",
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// A transaction (PostgreSQL's READ COMMITTED; SQLite's deferred one).
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A transaction whose reads decide its writes: on SQLite it takes the write lock first
    /// (`BEGIN IMMEDIATE`; a deferred one could not upgrade while another writer commits).
    /// PostgreSQL's statements lock what they need (`FOR UPDATE`, advisory locks).
    pub(crate) async fn begin_writing(&self) -> Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

/// What a statement changed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    rows_affected: u64,
}

impl Done {
    pub(crate) fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

/// A statement and its arguments, run by [`Query::execute`] or read through [`query_as`] /
/// [`query_scalar`].
#[must_use = "a query does nothing until it is executed or fetched"]
pub(crate) struct Query<'q> {
    sql: SqlStr,
    args: Vec<Value<'q>>,
}

pub(crate) fn query<'q>(sql: impl SqlSafeStr) -> Query<'q> {
    Query {
        sql: sql.into_sql_str(),
        args: Vec::new(),
    }
}

/// A statement whose rows decode as `R`.
#[must_use = "a query does nothing until it is fetched"]
pub(crate) struct QueryAs<'q, R> {
    query: Query<'q>,
    row: PhantomData<fn() -> R>,
}

pub(crate) fn query_as<'q, R: Record>(sql: impl SqlSafeStr) -> QueryAs<'q, R> {
    QueryAs {
        query: query(sql),
        row: PhantomData,
    }
}

/// A statement whose rows' first column decodes as `T`.
#[must_use = "a query does nothing until it is fetched"]
pub(crate) struct QueryScalar<'q, T> {
    rows: QueryAs<'q, (T,)>,
}

pub(crate) fn query_scalar<'q, T>(sql: impl SqlSafeStr) -> QueryScalar<'q, T>
where
    (T,): Record,
{
    QueryScalar {
        rows: query_as(sql),
    }
}

/// The driver's own query with `args` bound in order.
fn bound<'q, DB>(
    sql: SqlStr,
    args: &'q [Value<'q>],
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<bool>: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
{
    args.iter()
        .fold(sqlx::query::<DB>(sql), |query, value| match value {
            Value::Int(v) => query.bind(*v),
            Value::Bool(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_deref()),
            Value::Bytes(v) => query.bind(v.as_deref()),
        })
}

/// Evaluates `$body` (which awaits) with `$query` bound to the driver's query and `$on` to the pool or
/// connection of whichever database `$target` is.
macro_rules! on_target {
    ($target:expr, $sql:expr, $args:expr, |$query:ident, $on:ident| $body:expr) => {
        match $target {
            Target::SqlitePool($on) => {
                let $query = bound::<Sqlite>($sql, $args);
                $body
            }
            Target::Sqlite($on) => {
                let $query = bound::<Sqlite>($sql, $args);
                $body
            }
            Target::PgPool($on) => {
                let $query = bound::<Postgres>($sql, $args);
                $body
            }
            Target::Postgres($on) => {
                let $query = bound::<Postgres>($sql, $args);
                $body
            }
        }
    };
}

impl<'q> Query<'q> {
    pub(crate) fn bind(mut self, value: impl Into<Value<'q>>) -> Self {
        self.args.push(value.into());
        self
    }

    pub(crate) async fn execute<'c>(self, on: impl Into<Target<'c>>) -> Result<Done> {
        let Query { sql, args } = self;
        let rows_affected = on_target!(on.into(), sql, &args, |query, on| query
            .execute(on)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(Done { rows_affected })
    }
}

impl<'q, R: Record> QueryAs<'q, R> {
    pub(crate) fn bind(mut self, value: impl Into<Value<'q>>) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub(crate) async fn fetch_all<'c>(self, on: impl Into<Target<'c>>) -> Result<Vec<R>> {
        let Query { sql, args } = self.query;
        Ok(on_target!(on.into(), sql, &args, |query, on| query
            .try_map(|row| R::from_row(&row))
            .fetch_all(on)
            .await)?)
    }

    pub(crate) async fn fetch_optional<'c>(self, on: impl Into<Target<'c>>) -> Result<Option<R>> {
        let Query { sql, args } = self.query;
        Ok(on_target!(on.into(), sql, &args, |query, on| query
            .try_map(|row| R::from_row(&row))
            .fetch_optional(on)
            .await)?)
    }

    pub(crate) async fn fetch_one<'c>(self, on: impl Into<Target<'c>>) -> Result<R> {
        let Query { sql, args } = self.query;
        Ok(on_target!(on.into(), sql, &args, |query, on| query
            .try_map(|row| R::from_row(&row))
            .fetch_one(on)
            .await)?)
    }
}

impl<'q, T> QueryScalar<'q, T>
where
    (T,): Record,
{
    pub(crate) fn bind(mut self, value: impl Into<Value<'q>>) -> Self {
        self.rows = self.rows.bind(value);
        self
    }

    pub(crate) async fn fetch_all<'c>(self, on: impl Into<Target<'c>>) -> Result<Vec<T>> {
        Ok(self
            .rows
            .fetch_all(on)
            .await?
            .into_iter()
            .map(|(v,)| v)
            .collect())
    }

    pub(crate) async fn fetch_optional<'c>(self, on: impl Into<Target<'c>>) -> Result<Option<T>> {
        Ok(self.rows.fetch_optional(on).await?.map(|(v,)| v))
    }

    pub(crate) async fn fetch_one<'c>(self, on: impl Into<Target<'c>>) -> Result<T> {
        Ok(self.rows.fetch_one(on).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use gantry_test_support::{TempDir, test_databases};

    use super::*;
    use crate::{Status, StoreError};

    #[derive(Debug, sqlx::FromRow)]
    struct Probe {
        #[sqlx(try_from = "Text<Status>")]
        status: Status,
        #[sqlx(try_from = "Text<Option<Status>>")]
        notified: Option<Status>,
        count: i64,
        flag: bool,
    }

    /// One statement, every kind of argument, on both databases: what is bound is what is
    /// read back, a NULL is `None`, and a value the row cannot parse is `Corrupt` naming
    /// its column (never a panic, never a plain database error).
    #[tokio::test]
    async fn arguments_and_rows_mean_the_same_on_both_databases() {
        let dir = TempDir::new("gantry-db");
        for (name, url) in test_databases(dir.path()).await {
            let store = Store::open(&url).await.expect("opens");
            let probe: Probe =
                query_as("SELECT $1 AS status, $2 AS notified, $3 + 1 AS count, $4 AS flag")
                    .bind("success")
                    .bind(None::<&str>)
                    .bind(41_i64)
                    .bind(true)
                    .fetch_one(&store.pool)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(probe.status, Status::Success, "{name}");
            assert_eq!(probe.notified, None, "{name}");
            assert_eq!(probe.count, 42, "{name}");
            assert!(probe.flag, "{name}");

            let text: Option<String> = query_scalar("SELECT $1")
                .bind(Some("ünïcode".to_owned()))
                .fetch_one(&store.pool)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(text.as_deref(), Some("ünïcode"), "{name}");

            let bad = query_as::<Probe>(
                "SELECT 'no such status' AS status, 'failure' AS notified, 1 AS count, \
                 TRUE AS flag",
            )
            .fetch_one(&store.pool)
            .await
            .expect_err("an unknown status is refused");
            match bad {
                StoreError::Corrupt { what, detail } => {
                    assert!(what.contains("status"), "{name}: {what}");
                    assert!(detail.contains("no such status"), "{name}: {detail}");
                }
                other => panic!("{name}: expected Corrupt, got {other:?}"),
            }

            let mut tx = store.begin().await.expect("begins");
            let inside: i64 = query_scalar("SELECT CAST($1 AS BIGINT)")
                .bind(7_i64)
                .fetch_one(&mut tx)
                .await
                .expect("reads in a transaction");
            assert_eq!(inside, 7, "{name}");
            tx.commit().await.expect("commits");
            store.close().await;
        }
    }
}

//! Advisory locks, as Postgres's `pg_advisory_lock` family: locks on
//! application-chosen keys (one `bigint` or two `int`s) that sessions take
//! exclusively or shared, held until unlocked or the session ends (the
//! `_xact_` ones until its transaction ends). Migration tools serialize
//! themselves with them (node-pg-migrate, Flyway, Prisma).
//!
//! A lock is re-entrant per session, as in Postgres: taking it twice needs
//! two unlocks. `pg_advisory_lock` waits for the lock.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::cast::as_primitive_array;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// A lock's key: one bigint, or two ints (Postgres keeps them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKey {
    Single(i64),
    Pair(i32, i32),
}

/// When a lock is given back by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// At unlock or the end of the session.
    Session,
    /// At the end of the transaction (the statement, outside a block).
    Transaction,
}

/// Holds of one key.
#[derive(Debug, Default)]
struct Holds {
    /// Session, scope → how many times it took the lock exclusively.
    exclusive: HashMap<(u64, Scope), u32>,
    /// Session, scope → how many times it took the lock shared.
    shared: HashMap<(u64, Scope), u32>,
}

impl Holds {
    fn free_for(&self, session: u64, shared: bool) -> bool {
        let others = |holds: &HashMap<(u64, Scope), u32>| holds.keys().any(|(s, _)| *s != session);
        if shared {
            !others(&self.exclusive)
        } else {
            !others(&self.exclusive) && !others(&self.shared)
        }
    }

    fn is_empty(&self) -> bool {
        self.exclusive.is_empty() && self.shared.is_empty()
    }
}

/// Every advisory lock of the database.
#[derive(Debug, Default)]
pub struct AdvisoryLocks {
    locks: Mutex<HashMap<LockKey, Holds>>,
    released: Condvar,
}

/// One lock held, as `pg_locks` lists it.
#[derive(Debug, Clone)]
pub struct HeldLock {
    pub key: LockKey,
    pub session: u64,
    pub shared: bool,
}

impl AdvisoryLocks {
    fn lock(&self) -> MutexGuard<'_, HashMap<LockKey, Holds>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `key` for `session` if no other session holds it in a
    /// conflicting mode; true when taken.
    pub fn try_lock(&self, session: u64, key: LockKey, shared: bool, scope: Scope) -> bool {
        let mut locks = self.lock();
        let holds = locks.entry(key).or_default();
        if !holds.free_for(session, shared) {
            return false;
        }
        let map = if shared {
            &mut holds.shared
        } else {
            &mut holds.exclusive
        };
        *map.entry((session, scope)).or_default() += 1;
        true
    }

    /// Takes `key`, waiting while another session holds it.
    pub fn lock_waiting(&self, session: u64, key: LockKey, shared: bool, scope: Scope) {
        let mut locks = self.lock();
        loop {
            let holds = locks.entry(key).or_default();
            if holds.free_for(session, shared) {
                let map = if shared {
                    &mut holds.shared
                } else {
                    &mut holds.exclusive
                };
                *map.entry((session, scope)).or_default() += 1;
                return;
            }
            locks = self
                .released
                .wait_timeout(locks, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Gives back one session-scoped hold of `key`; false when `session`
    /// held none.
    pub fn unlock(&self, session: u64, key: LockKey, shared: bool) -> bool {
        let mut locks = self.lock();
        let Some(holds) = locks.get_mut(&key) else {
            return false;
        };
        let map = if shared {
            &mut holds.shared
        } else {
            &mut holds.exclusive
        };
        let Some(count) = map.get_mut(&(session, Scope::Session)) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            map.remove(&(session, Scope::Session));
        }
        if holds.is_empty() {
            locks.remove(&key);
        }
        self.released.notify_all();
        true
    }

    /// Gives back every hold of `session` in `scope` (None: both).
    pub fn release_all(&self, session: u64, scope: Option<Scope>) {
        let mut locks = self.lock();
        let mine = |(s, sc): &(u64, Scope)| *s == session && scope.is_none_or(|x| x == *sc);
        for holds in locks.values_mut() {
            holds.exclusive.retain(|k, _| !mine(k));
            holds.shared.retain(|k, _| !mine(k));
        }
        locks.retain(|_, holds| !holds.is_empty());
        self.released.notify_all();
    }

    /// Every lock held now.
    pub fn held(&self) -> Vec<HeldLock> {
        let locks = self.lock();
        let mut out = vec![];
        for (key, holds) in locks.iter() {
            for (session, _) in holds.exclusive.keys() {
                out.push(HeldLock {
                    key: *key,
                    session: *session,
                    shared: false,
                });
            }
            for (session, _) in holds.shared.keys() {
                out.push(HeldLock {
                    key: *key,
                    session: *session,
                    shared: true,
                });
            }
        }
        out
    }
}

/// What a function does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Lock,
    TryLock,
    Unlock,
}

/// The `pg_advisory_*` functions of session `session`.
pub fn advisory_lock_functions(locks: &Arc<AdvisoryLocks>, session: u64) -> Vec<ScalarUDF> {
    let mut out = vec![];
    for (name, action, shared, scope) in [
        ("pg_advisory_lock", Action::Lock, false, Scope::Session),
        (
            "pg_advisory_lock_shared",
            Action::Lock,
            true,
            Scope::Session,
        ),
        (
            "pg_try_advisory_lock",
            Action::TryLock,
            false,
            Scope::Session,
        ),
        (
            "pg_try_advisory_lock_shared",
            Action::TryLock,
            true,
            Scope::Session,
        ),
        (
            "pg_advisory_xact_lock",
            Action::Lock,
            false,
            Scope::Transaction,
        ),
        (
            "pg_advisory_xact_lock_shared",
            Action::Lock,
            true,
            Scope::Transaction,
        ),
        (
            "pg_try_advisory_xact_lock",
            Action::TryLock,
            false,
            Scope::Transaction,
        ),
        (
            "pg_try_advisory_xact_lock_shared",
            Action::TryLock,
            true,
            Scope::Transaction,
        ),
        ("pg_advisory_unlock", Action::Unlock, false, Scope::Session),
        (
            "pg_advisory_unlock_shared",
            Action::Unlock,
            true,
            Scope::Session,
        ),
    ] {
        out.push(ScalarUDF::new_from_impl(AdvisoryFunction {
            name,
            action,
            shared,
            scope,
            session,
            locks: Arc::clone(locks),
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Int64]),
                    TypeSignature::Exact(vec![DataType::Int32, DataType::Int32]),
                ],
                Volatility::Volatile,
            ),
        }));
    }
    out.push(ScalarUDF::new_from_impl(UnlockAll {
        session,
        locks: Arc::clone(locks),
        signature: Signature::exact(vec![], Volatility::Volatile),
    }));
    out
}

#[derive(Debug)]
struct AdvisoryFunction {
    name: &'static str,
    action: Action,
    shared: bool,
    scope: Scope,
    session: u64,
    locks: Arc<AdvisoryLocks>,
    signature: Signature,
}

impl PartialEq for AdvisoryFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.session == other.session
    }
}

impl Eq for AdvisoryFunction {}

impl std::hash::Hash for AdvisoryFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.session.hash(state);
    }
}

fn keys(arrays: &[ArrayRef], rows: usize) -> Result<Vec<Option<LockKey>>> {
    let column = |i: usize| -> Result<ArrayRef> { Ok(cast(&arrays[i], &DataType::Int64)?) };
    match arrays.len() {
        1 => {
            let a = column(0)?;
            let a = as_primitive_array::<Int64Type>(&a)?;
            Ok((0..rows)
                .map(|r| (!a.is_null(r)).then(|| LockKey::Single(a.value(r))))
                .collect())
        }
        2 => {
            let (a, b) = (column(0)?, column(1)?);
            let (a, b) = (
                as_primitive_array::<Int64Type>(&a)?,
                as_primitive_array::<Int64Type>(&b)?,
            );
            Ok((0..rows)
                .map(|r| {
                    (!a.is_null(r) && !b.is_null(r))
                        .then(|| LockKey::Pair(a.value(r) as i32, b.value(r) as i32))
                })
                .collect())
        }
        _ => Err(DataFusionError::Plan(
            "an advisory lock key is one bigint or two ints".into(),
        )),
    }
}

impl ScalarUDFImpl for AdvisoryFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.action {
            // void: Postgres prints an empty value.
            Action::Lock => DataType::Utf8,
            _ => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let keys = keys(&arrays, args.number_rows)?;
        let (session, shared, scope) = (self.session, self.shared, self.scope);
        let out: ArrayRef = match self.action {
            Action::Lock => {
                for key in keys.iter().flatten() {
                    let locks = Arc::clone(&self.locks);
                    let key = *key;
                    // Waiting blocks this thread: let the runtime move its
                    // other work (the holder's unlock) elsewhere.
                    tokio::task::block_in_place(|| locks.lock_waiting(session, key, shared, scope));
                }
                Arc::new(datafusion::arrow::array::StringArray::from(
                    keys.iter().map(|k| k.map(|_| "")).collect::<Vec<_>>(),
                ))
            }
            Action::TryLock => Arc::new(BooleanArray::from(
                keys.iter()
                    .map(|k| k.map(|k| self.locks.try_lock(session, k, shared, scope)))
                    .collect::<Vec<_>>(),
            )),
            Action::Unlock => Arc::new(BooleanArray::from(
                keys.iter()
                    .map(|k| k.map(|k| self.locks.unlock(session, k, shared)))
                    .collect::<Vec<_>>(),
            )),
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `pg_advisory_unlock_all()`.
#[derive(Debug)]
struct UnlockAll {
    session: u64,
    locks: Arc<AdvisoryLocks>,
    signature: Signature,
}

impl PartialEq for UnlockAll {
    fn eq(&self, other: &Self) -> bool {
        self.session == other.session
    }
}

impl Eq for UnlockAll {}

impl std::hash::Hash for UnlockAll {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.session.hash(state);
    }
}

impl ScalarUDFImpl for UnlockAll {
    fn name(&self) -> &str {
        "pg_advisory_unlock_all"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.locks.release_all(self.session, Some(Scope::Session));
        Ok(ColumnarValue::Array(Arc::new(
            datafusion::arrow::array::StringArray::from(vec![""; args.number_rows.max(1)]),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_shared_and_reentrant() {
        let locks = AdvisoryLocks::default();
        let key = LockKey::Single(7);
        assert!(locks.try_lock(1, key, false, Scope::Session));
        assert!(locks.try_lock(1, key, false, Scope::Session));
        assert!(!locks.try_lock(2, key, false, Scope::Session));
        assert!(!locks.try_lock(2, key, true, Scope::Session));
        assert!(locks.unlock(1, key, false));
        assert!(!locks.try_lock(2, key, false, Scope::Session));
        assert!(locks.unlock(1, key, false));
        assert!(!locks.unlock(1, key, false));
        assert!(locks.try_lock(2, key, true, Scope::Session));
        assert!(locks.try_lock(3, key, true, Scope::Session));
        assert!(!locks.try_lock(1, key, false, Scope::Session));
        assert!(locks.try_lock(2, LockKey::Pair(0, 7), false, Scope::Transaction));
        locks.release_all(2, Some(Scope::Transaction));
        assert!(locks.try_lock(1, LockKey::Pair(0, 7), false, Scope::Session));
        locks.release_all(2, None);
        locks.release_all(3, None);
        assert!(locks.try_lock(1, key, false, Scope::Session));
        assert_eq!(locks.held().len(), 2);
    }
}

//! The officer registry (警号, name, unit) and the recorder check-out register (领用/归还). Every change
//! to the register re-attributes the recorder's evidence in the same transaction, so each item always
//! names the officer who held its recorder when it recorded.

use crate::accounts::{User, require};
use crate::error::CasesError;
use crate::{check_text, now};
use custody_core::access::Capability;
use custody_core::{BadgeNo, DeviceId, Timestamp};
use custody_store::{CheckoutRecord, Metadata, OfficerRecord, StoreError};

/// Officers and recorder check-outs.
#[derive(Debug, Clone)]
pub struct Officers {
    meta: Metadata,
}

impl Officers {
    pub fn new(meta: Metadata) -> Self {
        Self { meta }
    }

    /// Registers an officer, or corrects the name and unit of one already registered.
    pub async fn upsert(
        &self,
        by: &User,
        badge: &BadgeNo,
        name: &str,
        unit: &str,
    ) -> Result<OfficerRecord, CasesError> {
        require(
            &self.meta,
            by,
            Capability::ManagePeople,
            "officer.write",
            Some(&format!("officer:{badge}")),
        )
        .await?;
        let name = check_text("name", name, 64)?;
        let unit = check_text("unit", unit, 128)?;
        let o = self.meta.upsert_officer(badge, &name, &unit, now()).await?;
        tracing::info!(badge = %badge, name = %o.name, unit = %o.unit, by = %by.username, "officer registered");
        Ok(o)
    }

    pub async fn get(&self, by: &User, badge: &BadgeNo) -> Result<OfficerRecord, CasesError> {
        if by.badge.as_ref() != Some(badge) {
            require(
                &self.meta,
                by,
                Capability::ReadPeople,
                "officer.read",
                Some(&format!("officer:{badge}")),
            )
            .await?;
        }
        self.meta
            .get_officer(badge)
            .await?
            .ok_or_else(|| CasesError::NotFound(format!("officer {badge}")))
    }

    pub async fn list(
        &self,
        by: &User,
        after: Option<&BadgeNo>,
        limit: u32,
    ) -> Result<Vec<OfficerRecord>, CasesError> {
        require(&self.meta, by, Capability::ReadPeople, "officer.list", None).await?;
        Ok(self.meta.list_officers(after, limit).await?)
    }

    /// Records that `badge` took `device` at `at` (now when `None`).
    pub async fn checkout(
        &self,
        by: &User,
        device: &DeviceId,
        badge: &BadgeNo,
        at: Option<Timestamp>,
        note: Option<&str>,
    ) -> Result<CheckoutRecord, CasesError> {
        let target = format!("device:{device}");
        require(
            &self.meta,
            by,
            Capability::ManagePeople,
            "recorder.checkout",
            Some(&target),
        )
        .await?;
        if self.meta.get_officer(badge).await?.is_none() {
            return Err(CasesError::NotFound(format!(
                "officer {badge} (register the officer before checking out a recorder)"
            )));
        }
        let c = self
            .meta
            .checkout_recorder(device, badge, at.unwrap_or_else(now), &by.actor(), note)
            .await
            .map_err(conflict_is_precondition)?;
        tracing::info!(device = %device, badge = %badge, out_at = %c.out_at, by = %by.username, "recorder checked out");
        crate::accounts::audit(
            &self.meta,
            &by.actor(),
            "recorder.checkout",
            Some(&target),
            "ok",
            Some(badge.as_str()),
        )
        .await;
        Ok(c)
    }

    /// Closes the open check-out of `device` at `at` (now when `None`).
    pub async fn return_recorder(
        &self,
        by: &User,
        device: &DeviceId,
        at: Option<Timestamp>,
    ) -> Result<CheckoutRecord, CasesError> {
        let target = format!("device:{device}");
        require(
            &self.meta,
            by,
            Capability::ManagePeople,
            "recorder.return",
            Some(&target),
        )
        .await?;
        let c = self
            .meta
            .return_recorder(device, at.unwrap_or_else(now), &by.actor())
            .await
            .map_err(conflict_is_precondition)?;
        tracing::info!(device = %device, badge = %c.badge, by = %by.username, "recorder returned");
        crate::accounts::audit(
            &self.meta,
            &by.actor(),
            "recorder.return",
            Some(&target),
            "ok",
            Some(c.badge.as_str()),
        )
        .await;
        Ok(c)
    }

    /// The check-out history of a recorder or an officer (an officer may read their own), newest first.
    pub async fn checkouts(
        &self,
        by: &User,
        device: Option<&DeviceId>,
        badge: Option<&BadgeNo>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<CheckoutRecord>, CasesError> {
        let own = badge.is_some() && by.badge.as_ref() == badge;
        if !own {
            require(
                &self.meta,
                by,
                Capability::ReadPeople,
                "recorder.checkouts",
                None,
            )
            .await?;
        }
        Ok(self
            .meta
            .list_checkouts(device, badge, before, limit)
            .await?)
    }
}

/// A refused register change is the caller's to fix, not a concurrency retry.
fn conflict_is_precondition(e: StoreError) -> CasesError {
    match e {
        StoreError::Conflict(m) => CasesError::FailedPrecondition(m),
        e => e.into(),
    }
}

//! Product snapshots: one shared snapshot of an account's IoT Hub products per (credentials,
//! region), filled by paging `DescribeProducts` (250 a page) at most once per interval, so that a
//! resync of N resources costs about N/250 calls instead of N. Products the snapshot cannot
//! answer for are read one by one with `DescribeProduct`. IoT Explorer and IoT Video have no
//! such list: their products are always read one by one (`DescribeProductDynamicRegister`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::wire::DESCRIBE_PRODUCTS_MAX_LIMIT;
use super::{CloudClient, CloudError, Credentials, ErrorClass, Product, Service};

/// The product as the cloud held it, and when that was read.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The product.
    pub product: Product,
    /// When it was read (the snapshot's time, or now for a single read).
    pub taken_at: Timestamp,
}

/// What an observation must deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The registration settings: a fresh enough snapshot will do.
    Settings,
    /// The settings and the ProductSecret: a snapshot entry without it is completed by a read.
    SettingsAndSecret,
    /// A read of the product itself, now (a person asked for a reconcile).
    FreshRead,
}

/// A failed observation, cheap to share among the reconciles that waited for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObserveFailure {
    /// How to handle it.
    pub class: ErrorClass,
    /// The cloud's error code or a fixed name.
    pub code: String,
    /// The error, as safe text.
    pub message: String,
}

impl From<&CloudError> for ObserveFailure {
    fn from(error: &CloudError) -> Self {
        Self {
            class: error.class(),
            code: error.code().to_owned(),
            message: error.to_string(),
        }
    }
}

#[derive(Default)]
struct Slot {
    snapshot: Option<Snapshot>,
    /// A refresh that failed just now is not repeated by every waiter.
    failed: Option<(Instant, ObserveFailure)>,
    /// TotalCount of the account's products in the region, from the last refresh.
    total_products: Option<u64>,
    /// A policy refused these credentials the list (DescribeProducts) until then: products are
    /// read one by one meanwhile, and the list is not asked again on every reconcile.
    list_refused_until: Option<Instant>,
}

struct Snapshot {
    taken: Instant,
    taken_at: Timestamp,
    products: HashMap<String, Product>,
}

/// How long a failed refresh answers for itself before the next reconcile tries again.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);
/// How long a policy's refusal of the list is remembered before the list is asked again (a
/// policy may be widened; asking every 10 minutes costs nothing).
pub const LIST_REFUSAL_MEMORY: Duration = Duration::from_secs(600);

/// Credentials fingerprint and region: whose products, where.
type SlotKey = ([u8; 32], String);

/// One snapshot, shared by the reconciles reading it.
type SharedSlot = Arc<tokio::sync::Mutex<Slot>>;

/// The shared snapshots, with when each was last used.
pub struct Observer {
    cloud: CloudClient,
    interval: Duration,
    slots: Mutex<HashMap<SlotKey, (SharedSlot, Instant)>>,
}

impl Observer {
    /// Snapshots refreshed at most once per `interval`.
    pub fn new(cloud: CloudClient, interval: Duration) -> Self {
        Self {
            cloud,
            interval,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, credentials: &Credentials, region: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Snapshots of credentials nobody used for a few intervals go (temporary credentials
        // bring a new key, and a new snapshot, at every rotation); one in use stays.
        let unused_for = self.interval * 3;
        slots.retain(|_, (slot, last_used)| {
            Arc::strong_count(slot) > 1 || now.duration_since(*last_used) < unused_for
        });
        let (slot, last_used) = slots
            .entry((credentials.fingerprint(), region.to_owned()))
            .or_insert_with(|| (Arc::default(), now));
        *last_used = now;
        slot.clone()
    }

    /// How many snapshots are held.
    pub fn snapshot_count(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The product as the cloud holds it. From the shared snapshot of the account's products
    /// in `region` (refreshed when older than the interval) when paging it costs no more calls
    /// than reading each of the `managed` resources that share these credentials and region;
    /// else, and for a product the snapshot lacks, a `DescribeProduct` of its own. With
    /// [`Need::SettingsAndSecret`], an entry of a product whose registration is on but whose
    /// ProductSecret the list left out is read on its own too; [`Need::FreshRead`] always is.
    /// A product of another service than IoT Hub is always read on its own.
    pub async fn observe(
        &self,
        (service, credentials): (Service, &Credentials),
        region: &str,
        product_id: &str,
        managed: usize,
        need: Need,
    ) -> Result<Observation, ObserveFailure> {
        if service != Service::IotHub {
            let product = self
                .cloud
                .read_product(service, credentials, region, product_id)
                .await
                .map_err(|error| ObserveFailure::from(&error))?;
            return Ok(Observation {
                product,
                taken_at: Timestamp::now(),
            });
        }
        let slot = self.slot(credentials, region);
        {
            let mut slot = slot.lock().await;
            let pages = slot.total_products.map_or(1, |total| {
                total.div_ceil(DESCRIBE_PRODUCTS_MAX_LIMIT).max(1)
            });
            let list_refused = slot
                .list_refused_until
                .is_some_and(|until| Instant::now() < until);
            if need != Need::FreshRead && pages as usize <= managed.max(1) && !list_refused {
                match self.refresh_if_stale(&mut slot, credentials, region).await {
                    Ok(()) => {}
                    // A key without DescribeProducts may still read products one by one.
                    Err(failure) if failure.class == ErrorClass::Forbidden => {
                        slot.list_refused_until = Some(Instant::now() + LIST_REFUSAL_MEMORY);
                        slot.failed = None;
                    }
                    Err(failure) => return Err(failure),
                }
                if let Some(snapshot) = &slot.snapshot
                    && let Some(product) = snapshot.products.get(product_id)
                    && !(need == Need::SettingsAndSecret && product.lacks_secret())
                {
                    return Ok(Observation {
                        product: product.clone(),
                        taken_at: snapshot.taken_at,
                    });
                }
            }
        }
        // Not in the snapshot (created since, or gone), its secret left out, or too few
        // resources to page for.
        let product = self
            .cloud
            .describe_product(credentials, region, product_id)
            .await
            .map_err(|error| ObserveFailure::from(&error))?;
        self.remember((service, credentials), region, &product)
            .await;
        Ok(Observation {
            product,
            taken_at: Timestamp::now(),
        })
    }

    async fn refresh_if_stale(
        &self,
        slot: &mut Slot,
        credentials: &Credentials,
        region: &str,
    ) -> Result<(), ObserveFailure> {
        let fresh = slot
            .snapshot
            .as_ref()
            .is_some_and(|snapshot| snapshot.taken.elapsed() < self.interval);
        if fresh {
            return Ok(());
        }
        if let Some((at, failure)) = &slot.failed
            && at.elapsed() < FAILURE_MEMORY
        {
            return Err(failure.clone());
        }
        // Stale, and unread while the slot is locked for this refresh: gone before the new
        // one comes in, so that a large account's products are not held twice.
        slot.snapshot = None;
        let taken = Instant::now();
        let taken_at = Timestamp::now();
        match self.cloud.describe_products(credentials, region).await {
            Ok(products) => {
                slot.total_products = Some(products.len() as u64);
                slot.snapshot = Some(Snapshot {
                    taken,
                    taken_at,
                    products: products
                        .into_iter()
                        .map(|product| (product.product_id.clone(), product))
                        .collect(),
                });
                slot.failed = None;
                Ok(())
            }
            Err(error) => {
                let failure = ObserveFailure::from(&error);
                slot.failed = Some((Instant::now(), failure.clone()));
                Err(failure)
            }
        }
    }

    /// Writes a product's new state into the snapshot (after an update, or a single read), so
    /// that the next resync does not act on what the snapshot held before. Only IoT Hub's
    /// products have a snapshot.
    pub async fn remember(
        &self,
        (service, credentials): (Service, &Credentials),
        region: &str,
        product: &Product,
    ) {
        if service != Service::IotHub {
            return;
        }
        let slot = self.slot(credentials, region);
        let mut slot = slot.lock().await;
        if let Some(snapshot) = slot.snapshot.as_mut() {
            snapshot
                .products
                .insert(product.product_id.clone(), product.clone());
        }
    }
}

//! End-to-end: two shards split the resources by label (`--watch-label-selector`), each with its
//! own Lease and leader; no resource is reconciled by both, and each converges its own share.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::RegistrationMode;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::control_plane::CONTROLLER_NAMESPACE;
use support::e2e::{Harness, registration};

const SHARD_KEY: &str = "sharding.iothub.dynreg.io/key";

/// Three unlabelled resources (main-0..2) and three labelled for shard 2 (second-3..5), and a
/// controller for each shard (with `extra` flags), all six converged.
async fn two_shards(
    harness: &Harness,
    extra: &[&str],
) -> (
    support::e2e::ControllerProcess,
    support::e2e::ControllerProcess,
) {
    for index in 0..6 {
        let mut resource = registration(
            &format!("{}-{index}", if index < 3 { "main" } else { "second" }),
            &format!("SHARD{index:05}"),
            RegistrationMode::AutoCreate,
            100,
        );
        if index >= 3 {
            resource.metadata.labels = Some([(SHARD_KEY.to_owned(), "shard-2".to_owned())].into());
        }
        harness.create(resource).await;
    }
    let shard = |selector: &str| {
        let mut args = vec![selector];
        args.extend_from_slice(extra);
        harness.spawn_controller(&args)
    };
    let main = shard("--watch-label-selector=!sharding.iothub.dynreg.io/key");
    let second = shard("--watch-label-selector=sharding.iothub.dynreg.io/key=shard-2");
    harness
        .wait_all_ready(6, Duration::from_secs(60), &second)
        .await;
    (main, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_the_resources_by_label() {
    let Some(harness) = Harness::with_credentials(
        "generate: {count: 6, region: ap-guangzhou, prefix: SHARD}",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (main, second) = two_shards(&harness, &["--leader-election"]).await;

    // Each reconciled its own share only (the log names every resource it reconciled).
    for (shard, own, other) in [(&main, "main-", "second-"), (&second, "second-", "main-")] {
        let log = shard.stderr();
        for index in 0..3 {
            let own_name = format!(
                "name={own}{}",
                if own == "main-" { index } else { index + 3 }
            );
            assert!(log.contains(&own_name), "{own_name} not reconciled:\n{log}");
        }
        assert!(
            !log.contains(&format!("name={other}")),
            "a resource of the other shard reconciled:\n{log}"
        );
    }
    // Each shard its own Lease, each held.
    let leases: Api<Lease> = Api::namespaced(harness.client.clone(), CONTROLLER_NAMESPACE);
    let held: Vec<(String, String)> = leases
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|lease| {
            let name = lease.metadata.name?;
            let holder = lease.spec?.holder_identity?;
            name.starts_with("iothub-dynreg-shard-")
                .then_some((name, holder))
        })
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert_ne!(held[0].1, held[1].1, "one holder for both shards: {held:?}");

    // The second shard's published Secrets carry its label: its Secret watch sees them.
    let published = harness
        .secrets()
        .get("second-3-product-secret")
        .await
        .unwrap();
    assert_eq!(
        published
            .metadata
            .labels
            .unwrap_or_default()
            .get(SHARD_KEY)
            .map(String::as_str),
        Some("shard-2")
    );
    harness.assert_no_secrets_logged(&main).await;
    harness.assert_no_secrets_logged(&second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_resource_moves_to_the_other_shard_and_back() {
    let Some(harness) = Harness::with_credentials(
        "generate: {count: 6, region: ap-guangzhou, prefix: SHARD}",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (main, second) = two_shards(&harness, &[]).await;
    // Moving a resource to the other shard: the other shard takes it over.
    harness
        .registrations()
        .patch(
            "main-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {SHARD_KEY: "shard-2"}},
                                 "spec": {"registerLimit": 7}})),
        )
        .await
        .unwrap();
    harness
        .wait_for(
            "the moved resource converged by the second shard",
            Duration::from_secs(30),
            Some(&second),
            || async {
                (harness.cloud_product("SHARD00000").await["registerLimit"] == 7).then_some(())
            },
        )
        .await;
    // The shard logs the reconcile once the cloud answered, a moment after the cloud changed.
    harness
        .wait_for(
            "the shard that took main-0 over to log it",
            Duration::from_secs(5),
            Some(&second),
            || async { second.stderr().contains("name=main-0").then_some(()) },
        )
        .await;

    // Moving one back by removing its label: the unlabelled shard takes it over and drops the
    // label from its Secret, which its Secret watch then shows.
    harness
        .registrations()
        .patch(
            "second-3",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {SHARD_KEY: null}},
                                 "spec": {"registerLimit": 9}})),
        )
        .await
        .unwrap();
    harness
        .wait_for(
            "the Secret of the resource moved back without its shard label",
            Duration::from_secs(30),
            Some(&main),
            || async {
                let converged = harness.cloud_product("SHARD00003").await["registerLimit"] == 9;
                let secret = harness
                    .secrets()
                    .get("second-3-product-secret")
                    .await
                    .unwrap();
                let labelled = secret
                    .metadata
                    .labels
                    .unwrap_or_default()
                    .contains_key(SHARD_KEY);
                (converged && !labelled).then_some(())
            },
        )
        .await;
    // The shard logs the reconcile once the cloud answered, a moment after the cloud changed.
    harness
        .wait_for(
            "the shard that took second-3 over to log it",
            Duration::from_secs(5),
            Some(&main),
            || async { main.stderr().contains("name=second-3").then_some(()) },
        )
        .await;
    harness.assert_no_secrets_logged(&main).await;
    harness.assert_no_secrets_logged(&second).await;
}

/// The credentials of a `Disable` resource on one shard, unlabelled (so in the other shard's
/// view too), stay protected: the other shard never takes the first's protection off, so
/// deleting the namespace lets the resource disable its product before its credentials go,
/// and the namespace goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_leave_each_others_credentials_protection_alone() {
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: SHARDDIS01, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    let mut disable = registration("disable", "SHARDDIS01", RegistrationMode::AutoCreate, 10);
    disable.spec.deletion_policy = iothub_dynreg::controller::resources::DeletionPolicy::Disable;
    disable.metadata.labels = Some([(SHARD_KEY.to_owned(), "shard-2".to_owned())].into());
    harness.create(disable).await;
    let main = harness.spawn_controller(&["--watch-label-selector=!sharding.iothub.dynreg.io/key"]);
    let second =
        harness.spawn_controller(&["--watch-label-selector=sharding.iothub.dynreg.io/key=shard-2"]);
    harness
        .wait_reason("disable", "InSync", Duration::from_secs(30), &second)
        .await;
    let protected = |secret: &k8s_openapi::api::core::v1::Secret| {
        secret
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f.starts_with("iothub.dynreg.io/credentials-in-use"))
    };
    // Protected, and still after several sweeps of the other shard (one a second at most).
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let credentials = harness.secrets().get("tencent-credentials").await.unwrap();
        assert!(
            protected(&credentials),
            "the credentials lost their protection"
        );
    }
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(harness.client.clone());
    namespaces
        .delete(&harness.namespace, &Default::default())
        .await
        .unwrap();
    harness
        .wait_namespace_gone(Duration::from_secs(60), &second)
        .await;
    assert_eq!(
        harness.cloud_product("SHARDDIS01").await["registerType"],
        0,
        "the product was not disabled"
    );
    drop(main);
}

/// A `Disable` resource of shard 2 moves to the main shard while shard 2 is down. Shard 2's
/// protection of the credentials Secret (unlabelled, so out of shard 2's view) must still come
/// off once shard 2 is back: nothing of shard 2 needs it any more, and a protection nobody takes
/// off keeps the Secret, and so the namespace, from ever being deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_back_from_a_restart_lets_go_of_credentials_its_resources_left() {
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: SHARDDIS02, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    let mut disable = registration("moving", "SHARDDIS02", RegistrationMode::AutoCreate, 10);
    disable.spec.deletion_policy = iothub_dynreg::controller::resources::DeletionPolicy::Disable;
    disable.metadata.labels = Some([(SHARD_KEY.to_owned(), "shard-2".to_owned())].into());
    harness.create(disable).await;
    let second_shard = "--watch-label-selector=sharding.iothub.dynreg.io/key=shard-2";
    let mut second = harness.spawn_controller(&[second_shard]);
    harness
        .wait_reason("moving", "InSync", Duration::from_secs(30), &second)
        .await;
    let finalizers = || async {
        let credentials = harness.secrets().get("tencent-credentials").await.unwrap();
        credentials.metadata.finalizers.unwrap_or_default()
    };
    let protected_by_second = |finalizers: &[String]| {
        finalizers
            .iter()
            .any(|f| f.starts_with("iothub.dynreg.io/credentials-in-use-"))
    };
    harness
        .wait_for(
            "shard 2 to protect the credentials",
            Duration::from_secs(20),
            Some(&second),
            || async { protected_by_second(&finalizers().await).then_some(()) },
        )
        .await;
    second.signal(libc::SIGKILL);
    let _ = second.wait_exit(Duration::from_secs(10));
    harness
        .registrations()
        .patch(
            "moving",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {SHARD_KEY: null}}})),
        )
        .await
        .unwrap();
    let main = harness.spawn_controller(&["--watch-label-selector=!sharding.iothub.dynreg.io/key"]);
    let second = harness.spawn_controller(&[second_shard]);
    harness
        .wait_for(
            "the main shard to protect the credentials, and shard 2 to let go",
            Duration::from_secs(60),
            Some(&second),
            || async {
                let finalizers = finalizers().await;
                let main_protects = finalizers
                    .iter()
                    .any(|f| f == "iothub.dynreg.io/credentials-in-use");
                (main_protects && !protected_by_second(&finalizers)).then_some(())
            },
        )
        .await;
    drop(main);
}

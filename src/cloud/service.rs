//! The Tencent Cloud services this crate calls: the three IoT services with dynamic registration
//! and STS. Each has its own host, API version and actions, and the cloud counts each action's
//! quota per service: IoT Hub's `UpdateProductDynamicRegister` and IoT Explorer's
//! `ModifyProductDynamicRegister` are different quotas, and so are Explorer's and Video's
//! `DescribeProductDynamicRegister`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::wire::Action;

/// A Tencent Cloud service, by the name its host and signatures use (also in the emulator's
/// seed and control endpoint).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Service {
    /// IoT Hub (`iotcloud`, 2021-04-08): products read with `DescribeProduct(s)`, changed with
    /// `UpdateProductDynamicRegister`.
    #[default]
    #[serde(rename = "iotcloud")]
    IotHub,
    /// IoT Explorer (`iotexplorer`, 2019-04-23): `Describe`/`ModifyProductDynamicRegister`.
    #[serde(rename = "iotexplorer")]
    IotExplorer,
    /// IoT Video (`iotvideo`, 2021-11-25): `Describe`/`ModifyProductDynamicRegister`.
    #[serde(rename = "iotvideo")]
    IotVideo,
    /// STS (`sts`, 2018-08-13): web identity credentials and whose key signs.
    #[serde(rename = "sts")]
    Sts,
}

impl Service {
    /// Every service, for per-service tables.
    pub const ALL: [Service; 4] = [
        Service::IotHub,
        Service::IotExplorer,
        Service::IotVideo,
        Service::Sts,
    ];

    /// The services whose products a resource may name.
    pub const PRODUCTS: [Service; 3] = [Service::IotHub, Service::IotExplorer, Service::IotVideo];

    /// The name in the host and the signature's credential scope.
    pub fn name(self) -> &'static str {
        match self {
            Service::IotHub => "iotcloud",
            Service::IotExplorer => "iotexplorer",
            Service::IotVideo => "iotvideo",
            Service::Sts => "sts",
        }
    }

    /// The API version this crate speaks to it (`X-TC-Version`).
    pub fn version(self) -> &'static str {
        match self {
            Service::IotHub => "2021-04-08",
            Service::IotExplorer => "2019-04-23",
            Service::IotVideo => "2021-11-25",
            Service::Sts => "2018-08-13",
        }
    }

    /// The actions of ours it serves.
    pub fn actions(self) -> &'static [Action] {
        match self {
            Service::IotHub => &[
                Action::DescribeProduct,
                Action::DescribeProducts,
                Action::UpdateProductDynamicRegister,
            ],
            Service::IotExplorer | Service::IotVideo => &[
                Action::DescribeProductDynamicRegister,
                Action::ModifyProductDynamicRegister,
            ],
            Service::Sts => &[Action::AssumeRoleWithWebIdentity, Action::GetCallerIdentity],
        }
    }

    /// Whether it serves `action`.
    pub fn serves(self, action: Action) -> bool {
        self.actions().contains(&action)
    }

    /// Its public host on the mainland site (`intl` false) or the international one.
    pub fn host(self, intl: bool) -> String {
        let site = if intl { "intl." } else { "" };
        format!("{}.{site}tencentcloudapi.com", self.name())
    }

    /// The service of a host or scope name (`iotcloud`, `iotexplorer`, `iotvideo`, `sts`).
    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == name)
    }

    /// Every `(service, action)` pair this crate calls: one quota each.
    pub fn all_actions() -> impl Iterator<Item = (Service, Action)> {
        Service::ALL.into_iter().flat_map(|service| {
            service
                .actions()
                .iter()
                .map(move |&action| (service, action))
        })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Service::from_name(text.trim()).ok_or_else(|| {
            let known: Vec<_> = Service::ALL.iter().map(|service| service.name()).collect();
            format!(
                "unknown service {text:?}; expected one of {}",
                known.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_versions_and_actions_are_the_official_sdks() {
        let table: Vec<_> = Service::PRODUCTS
            .into_iter()
            .map(|service| (service.host(false), service.version()))
            .collect();
        assert_eq!(
            table,
            [
                ("iotcloud.tencentcloudapi.com".to_owned(), "2021-04-08"),
                ("iotexplorer.tencentcloudapi.com".to_owned(), "2019-04-23"),
                ("iotvideo.tencentcloudapi.com".to_owned(), "2021-11-25"),
            ]
        );
        assert_eq!(
            Service::IotExplorer.host(true),
            "iotexplorer.intl.tencentcloudapi.com"
        );
        assert!(Service::IotVideo.serves(Action::ModifyProductDynamicRegister));
        assert!(!Service::IotHub.serves(Action::ModifyProductDynamicRegister));
        assert!(!Service::IotExplorer.serves(Action::DescribeProducts));
        // Every action is served by some service.
        for action in Action::ALL {
            assert!(
                Service::ALL.iter().any(|service| service.serves(action)),
                "{action}"
            );
        }
        assert_eq!(Service::all_actions().count(), 9);
    }
}

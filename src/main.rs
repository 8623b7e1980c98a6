fn main() {
    let crd = <iothub_dynreg::crd::DynamicRegistration as kube::CustomResourceExt>::crd();
    print!("{}", serde_yaml::to_string(&crd).unwrap());
}

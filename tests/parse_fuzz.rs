//! Property test of answer parsing: any status and any bytes give a typed answer or an error,
//! never a panic, and no error message carries the ProductSecret of the body it came from.

use iothub_dynreg::cloud::Action;
use iothub_dynreg::cloud::client::parse_answer;
use iothub_dynreg::cloud::wire::{
    DescribeProductResponse, DescribeProductsResponse, UpdateProductDynamicRegisterResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECRET: &str = "PSfuzzSECRETvalue42";

const SEEDS: [&str; 4] = [
    r#"{"Response":{"RegisterType":2,"ProductSecret":"PSfuzzSECRETvalue42","RegisterLimit":10000,"RequestId":"r"}}"#,
    r#"{"Response":{"ProductId":"P","ProductName":"n","ProductProperties":{"RegisterType":1,"RegisterLimit":5,"ProductSecret":"PSfuzzSECRETvalue42"},"RequestId":"r"}}"#,
    r#"{"Response":{"TotalCount":1,"Products":[{"ProductId":"P","ProductProperties":{"RegisterType":0,"ProductSecret":"PSfuzzSECRETvalue42"}}],"RequestId":"r"}}"#,
    r#"{"Response":{"Error":{"Code":"InternalError","Message":"m"},"RequestId":"r"}}"#,
];

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.random_range(0..5) {
        0 => bytes.truncate(rng.random_range(0..=bytes.len())),
        1 => {
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
        }
        2 => {
            // Swap a value for a secret-bearing string, to tempt "invalid type" messages.
            let text = String::from_utf8_lossy(&bytes)
                .replacen("10000", &format!("\"{SECRET}\""), 1)
                .replacen(":1,", &format!(":\"{SECRET}\","), 1)
                .replacen(":0,", &format!(":[\"{SECRET}\"],"), 1);
            bytes = text.into_bytes();
        }
        3 => {
            let at = rng.random_range(0..=bytes.len());
            let junk: Vec<u8> = (0..rng.random_range(1..30)).map(|_| rng.random()).collect();
            bytes.splice(at..at, junk);
        }
        _ => {
            bytes = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect()
        }
    }
    bytes
}

fn check<T: serde::de::DeserializeOwned>(action: Action, status: u16, body: &[u8]) {
    if let Err(error) = parse_answer::<T>(action, status, body) {
        let text = format!("{error} {error:?}");
        assert!(
            !text.contains(SECRET),
            "secret in error for body {:?}: {text}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn parsing_is_total_and_never_leaks() {
    let mut rng = StdRng::seed_from_u64(0x10_7C10D);
    for _ in 0..20_000 {
        let seed = SEEDS[rng.random_range(0..SEEDS.len())].as_bytes();
        let body = mutate(&mut rng, seed);
        let status = if rng.random_ratio(1, 10) {
            rng.random_range(100..600)
        } else {
            200
        };
        check::<UpdateProductDynamicRegisterResponse>(
            Action::UpdateProductDynamicRegister,
            status,
            &body,
        );
        check::<DescribeProductResponse>(Action::DescribeProduct, status, &body);
        check::<DescribeProductsResponse>(Action::DescribeProducts, status, &body);
    }
    // Junk in front of a JSON answer must not get the secret quoted in the "starts with" part.
    let prefixed = format!(
        "x{}",
        r#"{"Response":{"ProductSecret":"PSfuzzSECRETvalue42"}}"#
    );
    check::<UpdateProductDynamicRegisterResponse>(
        Action::UpdateProductDynamicRegister,
        200,
        prefixed.as_bytes(),
    );
    // Deep nesting is refused by the parser's recursion limit, not by a stack overflow.
    let deep = "[".repeat(100_000);
    check::<DescribeProductResponse>(Action::DescribeProduct, 200, deep.as_bytes());
}

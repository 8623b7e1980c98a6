//! The check, written for its readers: lines for a terminal, JSON for CI. Neither holds a
//! secret: a report carries none.

use serde_json::{Value, json};

use super::{Call, CallResult, KeyVerdict, Report};

/// The shape of the JSON output; raised only when a field changes meaning or goes.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// For a terminal: the key, one line per call, the policy the key lacks, the verdict.
pub fn text(report: &Report, source: &str) -> String {
    let mut out = format!("Credentials {} ({source})\n", report.secret_id);
    match &report.identity {
        Ok(identity) => out.push_str(&format!(
            "  whose: account {}, user {} ({})\n",
            identity.account_id, identity.user_id, identity.kind
        )),
        Err(why) => out.push_str(&format!("  whose: STS did not say: {why}\n")),
    }
    out.push_str(&format!(
        "  signs correctly: {}\n\n",
        key_line(&report.key())
    ));
    let rows: Vec<[String; 4]> = report.calls.iter().map(row).collect();
    let header = ["ACTION", "REGION", "PRODUCT", "RESULT"].map(str::to_owned);
    let widths: Vec<usize> = (0..3)
        .map(|column| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or_default()
        })
        .collect();
    for cells in std::iter::once(&header).chain(&rows) {
        for (cell, width) in cells.iter().zip(&widths) {
            out.push_str(&format!("{cell:<width$}   "));
        }
        out.push_str(&cells[3]);
        out.push('\n');
    }
    if let Some(policy) = report.missing_policy() {
        out.push_str("\nThe key lacks these permissions; a CAM policy that grants them:\n");
        out.push_str(&format!("{policy:#}\n"));
    }
    out.push_str(&format!("\n{}\n", verdict_line(report)));
    out
}

/// For CI: stable field names, the exit status included.
pub fn json(report: &Report, source: &str) -> Value {
    let (whose, whose_error) = match &report.identity {
        Ok(identity) => (
            json!({"accountId": identity.account_id, "userId": identity.user_id, "type": identity.kind}),
            Value::Null,
        ),
        Err(why) => (Value::Null, Value::from(why.as_str())),
    };
    let (key, key_code) = match report.key() {
        KeyVerdict::Accepted => ("accepted", None),
        KeyVerdict::Refused(code) => ("refused", Some(code)),
        KeyVerdict::AccountSuspended(code) => ("accountSuspended", Some(code)),
        KeyVerdict::Unknown => ("unknown", None),
    };
    let calls: Vec<Value> = report.calls.iter().map(call_json).collect();
    json!({
        "formatVersion": JSON_FORMAT_VERSION,
        "secretId": report.secret_id,
        "source": source,
        "identity": whose,
        "identityError": whose_error,
        "key": key,
        "keyCode": key_code,
        "calls": calls,
        "productsReached": report.reached,
        "lacking": report.lacking().into_iter().map(super::action_name).collect::<Vec<_>>(),
        "missingPolicy": report.missing_policy(),
        "exitCode": report.exit_code(),
    })
}

fn call_json(call: &Call) -> Value {
    let (result, code, detail) = match &call.outcome {
        CallResult::Allowed(detail) => ("allowed", None, detail.as_str()),
        CallResult::Refused { code, message, .. } => {
            ("refused", Some(code.as_str()), message.as_str())
        }
        CallResult::Skipped(why) => ("skipped", None, why.as_str()),
    };
    json!({
        "action": call.name(),
        "region": call.region,
        "productId": call.product,
        "result": result,
        "code": code,
        "detail": detail,
    })
}

fn row(call: &Call) -> [String; 4] {
    let result = match &call.outcome {
        CallResult::Allowed(detail) => format!("allowed: {detail}"),
        CallResult::Refused { message, .. } => format!("refused: {message}"),
        CallResult::Skipped(why) => format!("not checked: {why}"),
    };
    [
        call.name(),
        call.region.clone(),
        call.product.clone().unwrap_or_else(|| "-".to_owned()),
        result,
    ]
}

fn key_line(key: &KeyVerdict) -> String {
    match key {
        KeyVerdict::Accepted => "yes, the cloud authenticated it".to_owned(),
        KeyVerdict::Refused(code) => format!(
            "no, the cloud refused the key ({code}): check the SecretId and SecretKey (and the token of temporary credentials), and that the key is enabled"
        ),
        KeyVerdict::AccountSuspended(code) => format!(
            "yes, but its account is suspended ({code}): the account's owner settles it in the Tencent Cloud console (overdue payment: Billing Center; identity verification: Account Center)"
        ),
        KeyVerdict::Unknown => {
            "unknown: the cloud did not answer (see the results below)".to_owned()
        }
    }
}

fn verdict_line(report: &Report) -> String {
    let listing_refused = report.lacking().contains(&(
        crate::cloud::Service::IotHub,
        crate::cloud::Action::DescribeProducts,
    ));
    match report.exit_code() {
        0 if listing_refused => "Check: the key can do what the controller needs, but CAM refuses it DescribeProducts: the controller reads each product alone (one call per product instead of one per 250; the policy above grants it).".to_owned(),
        0 => "Check: the key can do what the controller needs.".to_owned(),
        1 => "Check: the key cannot do what the controller needs (see above).".to_owned(),
        _ => "Check: inconclusive: the cloud could not be asked; try again.".to_owned(),
    }
}

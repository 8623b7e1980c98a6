//! The plan, written for its readers: a table for a terminal, markdown for a pull-request
//! comment, JSON for bots. No output holds a ProductSecret: a plan carries none.

use serde_json::{Value, json};

use super::{Action, FleetPlan, Planned};

/// The shape of the JSON output; raised only when a field changes meaning or goes.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// Every action, in the order summaries list them.
const ACTIONS: [Action; 12] = [
    Action::Update,
    Action::NoChange,
    Action::Drift,
    Action::Suspended,
    Action::Conflict,
    Action::Invalid,
    Action::NotFound,
    Action::Forbidden,
    Action::Unsupported,
    Action::AuthFailed,
    Action::AccountSuspended,
    Action::Error,
];

const HEADER: [&str; 7] = [
    "RESOURCE", "PRODUCT", "REGION", "FIELD", "CLOUD", "WANTED", "ACTION",
];

/// One line per changed setting; one line for a resource with none.
fn rows(plan: &FleetPlan) -> Vec<[String; 7]> {
    let mut rows = Vec::new();
    for planned in &plan.resources {
        let row = |field: &str, cloud: &str, wanted: &str| {
            [
                planned.resource(),
                planned.product_id.clone(),
                planned.region.clone(),
                field.to_owned(),
                cloud.to_owned(),
                wanted.to_owned(),
                planned.action.as_str().to_owned(),
            ]
        };
        if planned.changes.is_empty() {
            rows.push(row("-", "-", "-"));
        }
        for change in &planned.changes {
            rows.push(row(change.field, &change.cloud, &change.wanted));
        }
    }
    rows
}

/// `1 to update, 1 without change, 2 failing; 3 documents of other kinds skipped`.
pub fn summary(plan: &FleetPlan) -> String {
    let failing = plan
        .resources
        .iter()
        .filter(|planned| planned.action.is_error())
        .count();
    let mut text = format!(
        "{} to update, {} without change, {failing} failing",
        plan.count(Action::Update),
        plan.resources.len() - plan.count(Action::Update) - failing,
    );
    if plan.skipped_documents > 0 {
        text.push_str(&format!(
            "; {} document{} of other kinds skipped",
            plan.skipped_documents,
            if plan.skipped_documents == 1 { "" } else { "s" }
        ));
    }
    text
}

/// The reasons of every row that is not a plain update or no change.
fn details(plan: &FleetPlan) -> impl Iterator<Item = (&Planned, &str)> {
    plan.resources
        .iter()
        .filter_map(|planned| planned.detail.as_deref().map(|detail| (planned, detail)))
}

/// A terminal table, its details, and the summary.
pub fn table(plan: &FleetPlan) -> String {
    let rows = rows(plan);
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("   ").trim_end())
    };
    let mut out = line(&HEADER);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    let mut details = details(plan).peekable();
    if details.peek().is_some() {
        out.push('\n');
    }
    for (planned, detail) in details {
        out.push_str(&format!(
            "{} ({}): {}: {detail}\n",
            planned.resource(),
            planned.origin,
            planned.action.as_str()
        ));
    }
    out.push_str(&format!("\nPlan: {}.\n", summary(plan)));
    out
}

/// A pull-request comment.
pub fn markdown(plan: &FleetPlan) -> String {
    let mut out = format!("### iothub-dynreg plan\n\n{}.\n\n", summary(plan));
    if plan.resources.is_empty() {
        out.push_str("No DynamicRegistration in the input.\n");
        return out;
    }
    out.push_str("| Resource | Product | Region | Field | Cloud | Wanted | Action |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for row in rows(plan) {
        let cells: Vec<String> = row.iter().map(|cell| cell_text(cell)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    let mut details = details(plan).peekable();
    if details.peek().is_some() {
        out.push('\n');
    }
    for (planned, detail) in details {
        out.push_str(&format!(
            "- `{}` ({}): **{}**: {}\n",
            planned.resource(),
            cell_text(&planned.origin.to_string()),
            planned.action.as_str(),
            cell_text(detail)
        ));
    }
    out
}

/// Text safe inside a markdown table cell or list item.
fn cell_text(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// For bots: documented in docs/guides/plan.md; fields are only ever added.
pub fn json(plan: &FleetPlan) -> Value {
    let resources: Vec<Value> = plan
        .resources
        .iter()
        .map(|planned| {
            json!({
                "namespace": planned.namespace,
                "name": planned.name,
                "file": planned.origin.file,
                "document": planned.origin.document,
                "productId": planned.product_id,
                "region": planned.region,
                "action": planned.action.as_str(),
                "changes": planned.changes.iter().map(|change| json!({
                    "field": change.field,
                    "cloud": change.cloud,
                    "wanted": change.wanted,
                })).collect::<Vec<_>>(),
                "detail": planned.detail,
            })
        })
        .collect();
    let actions: serde_json::Map<String, Value> = ACTIONS
        .iter()
        .map(|action| (action.as_str().to_owned(), json!(plan.count(*action))))
        .collect();
    json!({
        "formatVersion": JSON_FORMAT_VERSION,
        "resources": resources,
        "summary": {
            "actions": actions,
            "skippedDocuments": plan.skipped_documents,
        },
        "exitCode": plan.exit_code(),
    })
}

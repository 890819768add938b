//! Every `evaluate:` expression finishes within its step budget or errors: generated
//! expressions (nested predicates over big lists, text doubled at every level) and the
//! pull request that once held the server's only webhook worker for hours.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gantry_pipeline::expr::{STEP_BUDGET, evaluate};

use crate::support::Rng;

/// A JSON list of `n` numbers, as an expression's text literal.
fn json_list(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("'[{}]'", items.join(","))
}

/// The shape of the attack: predicates four deep, each over 200 items (200^4 steps).
fn nested_filters(depth: usize, items: usize) -> String {
    let list = json_list(items);
    let mut body = "# >= 0".to_owned();
    for _ in 0..depth {
        body = format!("len(filter(fromJSON({list}), {{{body}}})) > 0");
    }
    body
}

fn variables() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("BIG".to_owned(), format!("[{}]", vec!["1"; 500].join(","))),
        ("TEXT".to_owned(), "x".repeat(10_000)),
        ("CI_COMMIT_BRANCH".to_owned(), "main".to_owned()),
    ])
}

/// Spent time far beyond what the budget allows would mean a cost it does not count.
const FAR_TOO_LONG: Duration = Duration::from_secs(10);

#[test]
fn the_nested_filter_attack_stops_at_the_budget_with_its_position() {
    let source = nested_filters(4, 200);
    assert!(source.len() < 4_000, "{} bytes", source.len());
    let started = Instant::now();
    let error = evaluate(&source, &variables()).expect_err("over budget");
    assert!(started.elapsed() < FAR_TOO_LONG, "{:?}", started.elapsed());
    assert!(
        error
            .message
            .contains(&format!("more than {STEP_BUDGET} steps")),
        "{error}"
    );
    assert!(error.offset < source.len(), "{error}");
    // The same shape, small, is an ordinary condition.
    assert_eq!(evaluate(&nested_filters(2, 5), &variables()), Ok(true));
}

#[test]
fn big_texts_joined_inside_nested_predicates_stop_at_the_budget() {
    // 500 × 500 joins of 20,000 bytes: gigabytes copied without a budget.
    let source = "any(fromJSON(BIG), {any(fromJSON(BIG), {len(TEXT + TEXT) > 0})})";
    let started = Instant::now();
    let outcome = evaluate(source, &variables());
    assert!(started.elapsed() < FAR_TOO_LONG, "{:?}", started.elapsed());
    let error = outcome.expect_err("over budget");
    assert!(error.message.contains("steps"), "{error}");
    // One join is an ordinary condition.
    assert_eq!(
        evaluate("len(TEXT + TEXT) == 20000", &variables()),
        Ok(true)
    );
}

/// Builds a random expression of at most `depth` levels from the operations that multiply
/// work: predicates, fromJSON, joins, comparisons of whole lists, regular expressions.
fn expression(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 {
        let leaves = [
            "#".to_owned(),
            "BIG".to_owned(),
            "TEXT".to_owned(),
            "$env.CI_COMMIT_BRANCH".to_owned(),
            "'a'".to_owned(),
            "3".to_owned(),
            json_list(50),
            "[#, #, #]".to_owned(),
        ];
        return leaves[rng.below(leaves.len())].clone();
    }
    let mut sub = || expression(rng, depth - 1);
    let (a, b) = (sub(), sub());
    let forms = [
        format!("filter(fromJSON({a}), {{{b}}})"),
        format!("any(fromJSON({a}), {{{b} == #}})"),
        format!("filter([{a}, {a}, {a}], {{len({b}) > 0}})"),
        format!("({a} + {b})"),
        format!("({a} == {b})"),
        format!("len({a})"),
        format!("string({a}) matches '(a|b)*x'"),
        format!("lower({a}) contains {b}"),
        format!("({a} && {b})"),
    ];
    forms[rng.below(forms.len())].clone()
}

#[test]
fn any_expression_finishes_within_the_budget_or_errors() {
    let vars = variables();
    let mut rng = Rng(0x5eed_0fb0_d9e7);
    let mut over_budget = 0;
    for round in 0..300 {
        let source = expression(&mut rng, 1 + round % 5);
        let started = Instant::now();
        let outcome = evaluate(&source, &vars);
        let took = started.elapsed();
        assert!(took < FAR_TOO_LONG, "{took:?} for {source}");
        if let Err(e) = outcome
            && e.message.contains("steps to evaluate")
        {
            over_budget += 1;
        }
    }
    // The generator does reach the limit: the test exercises the budget, not only errors.
    assert!(
        over_budget > 0,
        "no generated expression reached the budget"
    );
}

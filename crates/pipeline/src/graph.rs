//! Ordering a dependency graph: a topological order that keeps file order where the graph
//! allows, or the cycle that prevents one. Iterative, so a hostile file with a long chain
//! cannot exhaust the stack.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// `parents[i]` lists the nodes `i` depends on. Returns the order, or one cycle as a list of
/// nodes where each depends on the next and the last on the first.
pub fn topological_order(parents: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = parents.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (child, ps) in parents.iter().enumerate() {
        for &parent in ps {
            children[parent].push(child);
            waiting[child] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(node)) = ready.pop() {
        order.push(node);
        for &child in &children[node] {
            waiting[child] -= 1;
            if waiting[child] == 0 {
                ready.push(Reverse(child));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every node left waits on another node left: follow parents until one repeats.
    let mut seen = vec![usize::MAX; n];
    let Some(mut node) = (0..n).find(|&i| waiting[i] > 0) else {
        return Ok(order);
    };
    let mut path = Vec::new();
    while seen[node] == usize::MAX {
        seen[node] = path.len();
        path.push(node);
        let Some(&parent) = parents[node].iter().find(|&&p| waiting[p] > 0) else {
            break;
        };
        node = parent;
    }
    let start = seen[node].min(path.len());
    Err(path[start..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_file_order_when_free() {
        assert_eq!(
            topological_order(&[vec![], vec![], vec![0]]),
            Ok(vec![0, 1, 2])
        );
        assert_eq!(
            topological_order(&[vec![2], vec![], vec![]]),
            Ok(vec![1, 2, 0])
        );
    }

    #[test]
    fn finds_a_cycle() {
        let cycle = topological_order(&[vec![], vec![2], vec![3], vec![1]]).expect_err("cycle");
        let mut sorted = cycle.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 2, 3]);
        assert_eq!(topological_order(&[vec![0]]), Err(vec![0]));
    }

    #[test]
    fn long_chains_do_not_recurse() {
        let parents: Vec<Vec<usize>> = (0..100_000)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        assert_eq!(topological_order(&parents).map(|o| o.len()), Ok(100_000));
    }
}

//! The gather's grouping: sends read together on one connection are stored
//! as one batch per queue, in arrival order within each.

use std::collections::HashMap;
use std::hash::Hash;

/// Groups items by destination, keeping arrival order within each: an item
/// joins only the newest group of its destination (joining an older one
/// would put it ahead of items after that group), and a group stops taking
/// items at `cap` bytes (a single bigger item still gets a group). Returns
/// each group's destination and size, and the items in group order.
///
/// The newest group of each destination is found by a search back through
/// the groups while they are few (most gathers are a request or a handful)
/// and through a map past that: with thousands of queues each request has a
/// group of its own, and the search made a gather quadratic. The items come
/// back in one list, not a list per group, for the same reason.
pub(crate) fn merge_in_order<D: Eq + Hash + Clone, T>(
    items: impl Iterator<Item = (D, usize, T)>,
    cap: usize,
) -> (Vec<(D, usize)>, Vec<T>) {
    /// Groups searched without a map.
    const SEARCHED: usize = 8;
    let mut groups: Vec<(D, usize, usize)> = Vec::with_capacity(items.size_hint().0);
    let mut newest: Option<HashMap<D, usize, crate::actors::FastHash>> = None;
    let mut placed = Vec::with_capacity(items.size_hint().0);
    for (dest, bytes, item) in items {
        let found = match &newest {
            Some(map) => map.get(&dest).copied(),
            None => groups.iter().rposition(|(d, _, _)| *d == dest),
        };
        let group = match found {
            Some(i) if groups[i].1 + bytes <= cap => {
                groups[i].1 += bytes;
                groups[i].2 += 1;
                i
            }
            _ => {
                if let Some(map) = &mut newest {
                    map.insert(dest.clone(), groups.len());
                }
                groups.push((dest, bytes, 1));
                if newest.is_none() && groups.len() > SEARCHED {
                    // Later groups overwrite earlier ones: the newest wins.
                    newest = Some(groups.iter().enumerate().map(|(i, (d, _, _))| (d.clone(), i)).collect());
                }
                groups.len() - 1
            }
        };
        placed.push((group, item));
    }
    // Stable: arrival order within a group stays.
    placed.sort_by_key(|(group, _)| *group);
    (
        groups.into_iter().map(|(dest, _, count)| (dest, count)).collect(),
        placed.into_iter().map(|(_, item)| item).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::merge_in_order;

    #[test]
    fn merged_groups_keep_arrival_order_per_destination() {
        let items = [("a", 10, 1), ("b", 10, 2), ("a", 80, 3), ("a", 15, 4), ("b", 10, 5), ("a", 200, 6), ("a", 1, 7)];
        let (groups, items) = merge_in_order(items.into_iter(), 100);
        // "a": 1+3 fit (90 bytes); 4 would pass the cap, so a new group;
        // 6 is bigger than the cap alone; 7 must follow it, never join
        // the room left in an older group.
        assert_eq!(groups, vec![("a", 2), ("b", 2), ("a", 1), ("a", 1), ("a", 1)]);
        assert_eq!(items, vec![1, 3, 2, 5, 4, 6, 7]);
    }

    /// The plain rule, searched back through every group.
    fn merged_by_search(items: &[(u32, usize, usize)], cap: usize) -> (Vec<(u32, usize)>, Vec<usize>) {
        let mut groups: Vec<(u32, usize, Vec<usize>)> = Vec::new();
        for &(dest, bytes, item) in items {
            match groups.iter_mut().rev().find(|(d, _, _)| *d == dest) {
                Some(group) if group.1 + bytes <= cap => {
                    group.1 += bytes;
                    group.2.push(item);
                }
                _ => groups.push((dest, bytes, vec![item])),
            }
        }
        let sizes = groups.iter().map(|(d, _, items)| (*d, items.len())).collect();
        (sizes, groups.into_iter().flat_map(|(_, _, items)| items).collect())
    }

    #[test]
    fn many_destinations_merge_as_few_do() {
        // Past a handful of groups the newest is found through a map; the
        // outcome must be the plain rule's, before and after the switch.
        let mut seed = 7u64;
        for destinations in [1u32, 3, 8, 9, 40] {
            for len in [0usize, 1, 5, 9, 10, 200] {
                let items: Vec<(u32, usize, usize)> = (0..len)
                    .map(|i| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((seed >> 33) as u32 % destinations, (seed >> 20) as usize % 60, i)
                    })
                    .collect();
                let merged = merge_in_order(items.iter().copied(), 100);
                assert_eq!(merged, merged_by_search(&items, 100), "{destinations} destinations, {len} items");
            }
        }
    }
}

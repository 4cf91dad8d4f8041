"""The tree of ranks: who coordinates whom, for every grouping."""

from __future__ import annotations

import pytest

from hpcthreads.errors import ConfigError
from hpcthreads.runtime import topology


def tree(size, groups, nodes=None):
    levels = topology.resolve(topology.parse_groups(groups), size, nodes)
    return topology.build(size, levels, nodes)


def test_no_grouping_feeds_every_rank_from_rank_0():
    t = tree(5, "none")
    assert t.children == {0: [1, 2, 3, 4]} and t.depth == 1
    assert [t.role(r) for r in range(5)] == ["coordinator"] + ["worker"] * 4


def test_a_group_size_makes_a_sub_coordinator_of_each_block_s_first_rank():
    t = tree(12, "4")
    assert t.children == {0: [1, 5, 9], 1: [2, 3, 4], 5: [6, 7, 8], 9: [10, 11]}
    assert t.capacity(0) == 8 and t.capacity(9) == 2 and t.depth == 2


def test_a_block_of_one_rank_is_a_worker():
    t = tree(6, "4")
    assert t.children == {0: [1, 5], 1: [2, 3, 4]} and t.role(5) == "worker"


def test_levels_nest_from_the_bottom():
    t = tree(14, "3,7")
    assert t.children[0] == [1, 8]
    assert t.children[1] == [2, 5] and t.children[2] == [3, 4] and t.children[5] == [6, 7]
    assert t.children[8] == [9, 12] and t.children[12] == [13]
    assert t.depth == 3 and t.capacity(0) == 7


def test_grouping_by_node_follows_the_nodes_not_the_rank_order():
    nodes = [0, 1, 0, 1, 0, 1, 2]  # round-robin placement over nodes 0 and 1, one rank on node 2
    t = tree(7, "node", nodes)
    assert t.children == {0: [1, 2, 6], 1: [3, 5], 2: [4]}
    assert t.workers_on_node(5, nodes) == [3, 5] and t.workers_on_node(4, nodes) == [4]


def test_auto_groups_by_node_only_on_large_runs_over_several_nodes():
    assert topology.resolve(("auto",), 512, [r // 64 for r in range(512)]) == ("node",)
    assert topology.resolve(("auto",), 128, [r // 64 for r in range(128)]) == ()
    assert topology.resolve(("auto",), 4096, [0] * 4096) == ()
    assert topology.resolve(("auto",), 4096, None) == ()


def test_every_rank_appears_once_in_any_tree():
    for size in (1, 2, 9, 65, 300):
        for groups in ("none", "2", "8", "3,9", "2,4,16"):
            t = tree(size, groups)
            below = [r for kids in t.children.values() for r in kids]
            assert sorted(below) == list(range(1, size)), (size, groups)
            assert t.capacity(0) == sum(t.role(r) == "worker" for r in range(size)) or size == 1


@pytest.mark.parametrize("text", ["1", "0", "-3", "fast", "4,", "node,x"])
def test_bad_groupings_are_refused(text):
    with pytest.raises(ConfigError, match="--groups"):
        topology.parse_groups(text)

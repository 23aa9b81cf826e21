"""Fitted scikit-learn tree ensembles as flat numpy arrays, evaluated for all trees and rows at once.

scikit-learn walks each tree of a forest in its own Cython call, so a 100-tree forest pays ~100
Python-level round trips per ``predict_proba`` whatever the number of rows (~7-25 ms for a
64-row serving batch). Here every tree is converted once, at load, into one table of nodes:

- nodes are renumbered so the two children of a split are adjacent (right = left + 1), so one step of
  the walk is ``node = left[node] + (x[feature[node]] > threshold[node])`` — a gather and a compare,
  no branch;
- a leaf points to itself with threshold ``+inf``, so a walk that reached its leaf stays there;
- all trees share one table (each tree's nodes are a contiguous block), so one step advances every
  (row, tree) pair of the batch in a handful of numpy calls, and pairs that reached a leaf are
  dropped from the working set every few steps.

Numerics follow scikit-learn exactly: inputs are cast to float32 first (as ``_validate_X_predict``
does) and compared with the float64 thresholds; a classifier tree's leaf holds the class fractions
(``tree_.value``, normalised since scikit-learn 1.4), a forest sums them tree by tree and divides by
the number of trees. That makes the answers bit-identical to ``predict_proba`` / ``predict``, not
merely close: ``tests/unit/serving/test_fastpath_properties.py`` checks it on depth-limited trees
(fractional and continuous leaves), on inputs exactly on, and one float32/float64 step around, every
learned threshold, and on values across the float32 range. A batch holding NaN (scikit-learn's
missing-value routing is per node) is not answered here: :meth:`CompiledTrees.mean_value` returns None
and the caller asks the estimator. Nor is a value that overflows float32 (|x| >= 2**128 - 2**103),
which scikit-learn refuses — unless ``sklearn.config_context(assume_finite=True)`` is active (as in the
server's frame path): scikit-learn then walks the overflowed ±inf like any number, and so does this.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CompiledTrees", "compile_trees"]

# Pairs that reached a leaf are dropped from the working set every this many steps: checking each
# step costs as much as the steps it saves, never checking walks finished pairs to the deepest leaf.
_COMPACT_EVERY = 4

# The smallest float64 magnitude that rounds to infinity in float32 (halfway between the largest
# float32 and 2**128; the tie rounds to even, which is 2**128). Below it the cast is finite.
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


def _supported_trees(estimator: Any) -> list[Any] | None:
    """The fitted single-output trees of a supported estimator, or None."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import (
        DecisionTreeClassifier,
        DecisionTreeRegressor,
        ExtraTreeClassifier,
        ExtraTreeRegressor,
    )

    # Exact types only: a subclass may override predict/predict_proba, and the compiled walk would
    # silently skip whatever it does.
    kind = type(estimator)
    if kind in (DecisionTreeClassifier, DecisionTreeRegressor, ExtraTreeClassifier, ExtraTreeRegressor):
        trees = [estimator]
    elif kind in (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor):
        trees = list(getattr(estimator, "estimators_", []))
    else:
        return None
    if not trees or getattr(estimator, "n_outputs_", 1) != 1:
        return None
    if not all(hasattr(t, "tree_") and t.tree_.n_outputs == 1 for t in trees):
        return None
    return trees


class CompiledTrees:
    """The nodes of every tree of one ensemble, renumbered and stacked (see module doc)."""

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        is_leaf: np.ndarray,
        value: np.ndarray,
        roots: np.ndarray,
        max_depth: int,
        n_features: int,
        is_classifier: bool,
    ) -> None:
        self.feature = feature
        self.threshold = threshold
        self.left = left
        self.is_leaf = is_leaf
        self.value = value
        """(nodes, outputs): class fractions for classifiers, the prediction for regressors."""
        self.roots = roots
        self.max_depth = max_depth
        self.n_features = n_features
        self.is_classifier = is_classifier

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    def leaves(self, X: np.ndarray, *, overflow: bool = False) -> np.ndarray:
        """The leaf reached by each row in each tree, shape (trees, rows), as node ids of the table."""
        n, trees = X.shape[0], self.n_trees
        # scikit-learn compares float32 inputs with float64 thresholds; the float32 round trip keeps
        # that exactly (a float32 widened to float64 is the same number).
        if overflow:  # values beyond float32 become ±inf, as in scikit-learn's cast (without its warning)
            with np.errstate(over="ignore"):
                flat = np.ascontiguousarray(X, dtype=np.float32).astype(np.float64).ravel()
        else:
            flat = np.ascontiguousarray(X, dtype=np.float32).astype(np.float64).ravel()
        node = np.repeat(self.roots, n)  # tree-major: pair p is tree p // n, row p % n
        base = np.tile(np.arange(n, dtype=np.intp) * self.n_features, trees)
        out = np.empty(n * trees, dtype=np.intp)
        where = np.arange(n * trees, dtype=np.intp)
        feature, threshold, left, is_leaf = self.feature, self.threshold, self.left, self.is_leaf
        # ndarray.take: the same gathers as fancy indexing with less per-call overhead.
        for step in range(1, self.max_depth + 1):
            node = left.take(node) + (flat.take(base + feature.take(node)) > threshold.take(node))
            if step % _COMPACT_EVERY == 0 and step < self.max_depth:
                done = is_leaf[node]
                if done.any():
                    out[where[done]] = node[done]
                    keep = ~done
                    node, base, where = node[keep], base[keep], where[keep]
                    if node.size == 0:
                        break
        out[where] = node
        return out.reshape(trees, n)

    def mean_value(self, X: np.ndarray) -> np.ndarray | None:
        """Per-row mean over trees of the leaf values, shape (rows, outputs); None: ask scikit-learn.

        None when a value is NaN (scikit-learn routes it per node) or overflows float32 (scikit-learn
        refuses it unless ``assume_finite``). One max and one min over float64 find both cases (NaN
        propagates and fails the comparison); the rare batch that fails looks closer.
        Summed tree after tree like scikit-learn's ``out += tree_prediction``: ``add.accumulate`` is
        sequential by definition, where ``sum`` may pair terms differently and round differently.
        """
        overflow = bool(X.size) and not (X.max() < _FLOAT32_OVERFLOW and X.min() > -_FLOAT32_OVERFLOW)
        if overflow and (np.isnan(X).any() or not _assume_finite()):
            return None
        values = self.value.take(self.leaves(X, overflow=overflow), axis=0)  # (trees, rows, outputs)
        total: np.ndarray = np.add.accumulate(values, axis=0)[-1]
        total /= self.n_trees
        return total


def _assume_finite() -> bool:
    from sklearn import get_config

    return bool(get_config()["assume_finite"])


def compile_trees(estimator: Any) -> CompiledTrees | None:
    """Compile a fitted DecisionTree*, RandomForest* or ExtraTrees* (single output), else None."""
    trees = _supported_trees(estimator)
    if trees is None:
        return None
    n_features = int(getattr(estimator, "n_features_in_", trees[0].n_features_in_))
    parts = [_renumber(t.tree_) for t in trees]
    sizes = [p[0].shape[0] for p in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    feature = np.concatenate([p[0] for p in parts])
    threshold = np.concatenate([p[1] for p in parts])
    left = np.concatenate([p[2] + off for p, off in zip(parts, offsets, strict=True)])
    is_leaf = np.concatenate([p[3] for p in parts])
    value = np.concatenate([p[4] for p in parts])
    return CompiledTrees(
        feature=feature,
        threshold=threshold,
        left=left,
        is_leaf=is_leaf,
        value=value,
        roots=offsets,  # each tree's root is the first node of its block
        max_depth=max(int(t.tree_.max_depth) for t in trees),
        n_features=n_features,
        is_classifier=hasattr(estimator, "classes_"),
    )


def _renumber(tree: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tree's nodes in breadth-first order with adjacent children (feature, thr, left, leaf, value)."""
    children_left = tree.children_left
    children_right = tree.children_right
    order: list[int] = [0]
    new_id = {0: 0}
    head = 0
    while head < len(order):
        old = order[head]
        head += 1
        if children_left[old] != -1:
            for child in (int(children_left[old]), int(children_right[old])):
                new_id[child] = len(order)
                order.append(child)
    old_ids = np.asarray(order, dtype=np.intp)
    n = old_ids.shape[0]
    leaf = children_left[old_ids] == -1
    left = np.where(leaf, np.arange(n), [new_id.get(int(c), -1) for c in children_left[old_ids]])
    feature = np.where(leaf, 0, tree.feature[old_ids]).astype(np.intp)
    threshold = np.where(leaf, np.inf, tree.threshold[old_ids]).astype(np.float64)
    # value is (nodes, outputs=1, classes) for classifiers, (nodes, 1, 1) for regressors.
    value = np.asarray(tree.value, dtype=np.float64)[old_ids, 0, :]
    return feature, threshold, np.asarray(left, dtype=np.intp), leaf, value

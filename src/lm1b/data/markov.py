"""A known random source of sentences: a sparse first-order Markov chain over a small vocabulary.

State 0 is `<S>`, states 1..V are the words. From state s the next symbol is one of
`successors[s]` (a handful of words drawn with Zipf-shaped weights, so word frequencies are
Zipf-like) or the sentence end `</S>`; `<S>` never ends a sentence at once, so no sentence is
empty. A sentence is the chain run from `<S>` until `</S>`.

The true entropy is exact, not estimated: with Q the chain's transitions among the states, the
expected visits of every state per sentence are n = e_<S> (I - Q)^-1 (an absorbing chain), each
visit predicts one token (a word or `</S>`), so the entropy per predicted token - the quantity a
language model's perplexity estimates, with the first word predicted from `<S>` - is
sum_s n_s H(s) / sum_s n_s, with H(s) the entropy of state s's next-token distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MarkovSource:
    successors: np.ndarray  # (V + 1, k) word ids in 1..V that may follow each state
    probs: np.ndarray  # (V + 1, k + 1) probability of each successor; last column: </S>

    @property
    def vocab_size(self) -> int:
        return self.successors.shape[0] - 1

    @property
    def end(self) -> int:
        """The symbol id of `</S>` in `transition_matrix` columns."""
        return self.vocab_size + 1

    def transition_matrix(self) -> np.ndarray:
        """Dense next-symbol probabilities: (V + 1 states, V + 2 symbols), column V + 1 = </S>."""
        size = self.vocab_size + 1
        matrix = np.zeros((size, size + 1))
        rows = np.repeat(np.arange(size), self.successors.shape[1])
        np.add.at(matrix, (rows, self.successors.ravel()), self.probs[:, :-1].ravel())
        matrix[:, self.end] = self.probs[:, -1]
        return matrix

    def entropy(self) -> tuple[float, float]:
        """(exact nats per predicted token, expected predicted tokens per sentence)."""
        matrix = self.transition_matrix()
        transient = matrix[:, : self.end]  # (V + 1, V + 1): transitions that do not end
        start = np.zeros(len(transient))
        start[0] = 1.0
        visits = np.linalg.solve((np.eye(len(transient)) - transient).T, start)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(self.probs > 0, -self.probs * np.log(self.probs), 0.0)
        return float(visits @ terms.sum(axis=1) / visits.sum()), float(visits.sum())

    def sample(self, num_sentences: int, rng: np.random.Generator) -> list[np.ndarray]:
        """`num_sentences` sentences as arrays of word ids (1..V), all chains stepped at once."""
        state = np.zeros(num_sentences, dtype=np.int64)
        alive = np.arange(num_sentences)
        steps: list[tuple[np.ndarray, np.ndarray]] = []  # (sentence indices, their next word)
        cumulative = np.cumsum(self.probs, axis=1)
        while len(alive):
            draws = rng.random(len(alive))
            choice = (draws[:, None] >= cumulative[state[alive]]).sum(axis=1)
            choice = np.minimum(choice, self.successors.shape[1])  # rounding: treat as </S>
            going_on = choice < self.successors.shape[1]
            alive, choice = alive[going_on], choice[going_on]
            state[alive] = self.successors[state[alive], choice]
            steps.append((alive, state[alive].copy()))
        sentences: list[list[int]] = [[] for _ in range(num_sentences)]
        for indices, words in steps:
            for index, word in zip(indices.tolist(), words.tolist(), strict=True):
                sentences[index].append(word)
        return [np.array(s, dtype=np.int64) for s in sentences]

    def nll(self, sentences: list[np.ndarray]) -> tuple[float, int]:
        """(total nats, predicted tokens) of `sentences` under the source: the best any model
        can do on them. Each sentence predicts its words and its end from `<S>` onwards."""
        log_matrix = np.log(np.maximum(self.transition_matrix(), 1e-300))
        previous = np.concatenate([np.concatenate([[0], s]) for s in sentences])
        following = np.concatenate([np.concatenate([s, [self.end]]) for s in sentences])
        return float(-log_matrix[previous, following].sum()), len(following)


def make_source(
    vocab_size: int = 300,
    num_successors: int = 6,
    seed: int = 0,
    end_probability: tuple[float, float] = (0.03, 0.1),
) -> MarkovSource:
    """A random sparse chain: successors drawn without replacement with Zipf weights 1/rank,
    their probabilities from a flat Dirichlet, and each word's end probability uniform in
    `end_probability` (mean sentence about 15 words)."""
    if not 1 <= num_successors <= vocab_size:
        raise ValueError(f"num_successors={num_successors} must be in 1..vocab_size={vocab_size}")
    rng = np.random.default_rng([seed, 0])
    zipf = 1.0 / np.arange(1, vocab_size + 1)
    zipf /= zipf.sum()
    successors = np.stack(
        [
            rng.choice(vocab_size, num_successors, replace=False, p=zipf) + 1
            for _ in range(vocab_size + 1)
        ]
    )
    weights = rng.dirichlet(np.ones(num_successors), size=vocab_size + 1)
    ends = rng.uniform(*end_probability, size=vocab_size + 1)
    ends[0] = 0.0  # <S> never ends a sentence: no empty lines
    probs = np.concatenate([weights * (1.0 - ends)[:, None], ends[:, None]], axis=1)
    return MarkovSource(successors, probs)

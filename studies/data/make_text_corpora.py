"""Write the two example text corpora: generated here from templates, nothing downloaded.

- ``sentiment-reviews.csv`` (600 rows, columns ``text,label``, labels ``negative`` /
  ``positive``, balanced): short made-up film reviews. Each review is one to three opinion
  sentences about an aspect ("the acting", "the plot", ...) with a positive or negative
  adjective, an optional intensifier, and **negation** ("was not good", "was never boring"),
  mixed with neutral filler sentences ("I watched it on a Sunday."). A review's label is its
  overall polarity: positive reviews may hold one negative remark ("but the ending was weak")
  and vice versa, and about 4% of the labels are flipped (annotator noise), so a bag of words
  does not solve it outright and word order (negation) matters.
- ``topic-news.jsonl`` (800 lines ``{"text": ..., "label": ...}``, 200 each of ``world``,
  ``sports``, ``business``, ``science``): made-up one- or two-sentence news items from
  per-topic subjects, verbs and objects, with shared newsroom filler ("officials said on
  Monday") and cross-topic words: a quarter of the items borrow another topic's object, some a
  second sentence from another topic, and 6% are another topic's text under this label (label
  noise), the shape of AG_NEWS, harder than a keyword lookup.

Run ``python studies/data/make_text_corpora.py`` to write both files again; the seeds are fixed,
so the bytes are the same.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent

ASPECTS = ["the acting", "the plot", "the soundtrack", "the dialogue", "the ending", "the pacing",
           "the cinematography", "the cast", "the script", "the direction", "the humour", "the story"]
POSITIVE = ["great", "wonderful", "moving", "brilliant", "charming", "superb", "gripping", "funny",
            "beautiful", "clever", "delightful", "excellent"]
NEGATIVE = ["boring", "awful", "dull", "clumsy", "weak", "terrible", "predictable", "tedious",
            "messy", "bland", "painful", "forgettable"]
INTENSIFIERS = ["", "", "really ", "very ", "quite ", "truly ", "rather "]
VERBS = ["was", "is", "felt", "seemed"]
FILLER = ["I watched it on a Sunday.", "My brother picked this one.", "It runs about two hours.",
          "We saw it at the local cinema.", "The theatre was half empty.", "I had read the book first.",
          "It came out last year.", "I went in knowing nothing about it.", "The popcorn was cold.",
          "It is based on a true story.", "There is a dog in it.", "I saw it twice."]
VERDICT_POS = ["I would recommend it.", "Worth seeing.", "I loved it!", "A must see.", "Go see it."]
VERDICT_NEG = ["I would not recommend it.", "Skip it.", "What a waste of time.", "Not worth it.",
               "I want my money back!"]


def opinion(rng: np.random.Generator, positive: bool) -> str:
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    verb = VERBS[rng.integers(len(VERBS))]
    if rng.random() < 0.3:  # negation: "not <opposite>" carries this polarity
        word = (NEGATIVE if positive else POSITIVE)[rng.integers(12)]
        negator = ["not", "never", "hardly"][rng.integers(3)] if positive else ["not", "never"][rng.integers(2)]
        return f"{aspect.capitalize()} {verb} {negator} {word}."
    word = (POSITIVE if positive else NEGATIVE)[rng.integers(12)]
    return f"{aspect.capitalize()} {verb} {INTENSIFIERS[rng.integers(len(INTENSIFIERS))]}{word}."


def review(rng: np.random.Generator, positive: bool) -> str:
    sentences = [opinion(rng, positive) for _ in range(rng.integers(1, 3))]
    if rng.random() < 0.35:  # one remark against the overall verdict
        remark = opinion(rng, not positive)
        sentences.append("But " + remark[0].lower() + remark[1:])
    for _ in range(rng.integers(0, 3)):
        sentences.insert(int(rng.integers(len(sentences) + 1)), FILLER[rng.integers(len(FILLER))])
    if rng.random() < 0.5:
        sentences.append((VERDICT_POS if positive else VERDICT_NEG)[rng.integers(5)])
    return " ".join(sentences)


TOPICS = {
    "world": (["The prime minister", "Rebel forces", "The United Nations", "Peace negotiators",
               "The foreign ministry", "Border guards", "The opposition party", "Aid agencies"],
              ["signed", "rejected", "called for", "condemned", "announced", "delayed"],
              ["a ceasefire", "new elections", "the treaty", "emergency aid", "sanctions",
               "talks with neighbours", "a state visit", "refugee camps"]),
    "sports": (["The home team", "The striker", "The coach", "The champions", "The goalkeeper",
                "The league", "The captain", "The rookie"],
               ["won", "lost", "clinched", "celebrated", "announced", "missed"],
               ["the final", "a penalty", "the title", "the season opener", "a transfer",
                "the derby", "a new contract", "the world record"]),
    "business": (["Shares of the bank", "The central bank", "The retailer", "Oil prices",
                  "The carmaker", "Investors", "The airline", "The startup"],
                 ["reported", "cut", "raised", "announced", "delayed", "forecast"],
                 ["quarterly profits", "interest rates", "a merger", "job cuts", "higher sales",
                  "its dividend", "a takeover bid", "record revenue"]),
    "science": (["Researchers", "The space agency", "Astronomers", "The software company",
                 "Engineers", "A new study", "The chip maker", "Biologists"],
                ["discovered", "launched", "released", "announced", "tested", "described"],
                ["a distant planet", "a new vaccine", "the rover", "a faster processor",
                 "an operating system update", "a fossil", "a quantum computer", "the telescope"]),
}
NEWS_FILLER = ["officials said on Monday.", "according to a statement.", "sources said.",
               "the report said on Friday.", "amid growing pressure.", "after weeks of speculation."]


def news(rng: np.random.Generator, topic: str) -> str:
    names = list(TOPICS)
    if rng.random() < 0.06:  # a mislabelled item: another topic's text under this label
        topic = names[(names.index(topic) + 1 + int(rng.integers(3))) % 4]
    subjects, verbs, objects = TOPICS[topic]
    if rng.random() < 0.25:  # an object borrowed from another topic ("The striker ... a merger")
        objects = TOPICS[names[int(rng.integers(4))]][2]
    text = f"{subjects[rng.integers(8)]} {verbs[rng.integers(6)]} {objects[rng.integers(8)]}"
    if rng.random() < 0.6:
        text += ", " + NEWS_FILLER[rng.integers(len(NEWS_FILLER))]
    else:
        text += "."
    if rng.random() < 0.4:  # a second sentence, sometimes borrowing another topic's words
        other = topic if rng.random() < 0.5 else names[rng.integers(4)]
        s2, v2, o2 = TOPICS[other]
        text += f" {s2[rng.integers(8)]} {v2[rng.integers(6)]} {o2[rng.integers(8)]} earlier."
    return text


def main() -> None:
    rng = np.random.default_rng(20260101)
    labels = np.array([1] * 300 + [0] * 300)
    rng.shuffle(labels)
    with open(HERE / "sentiment-reviews.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        for label in labels:
            text = review(rng, bool(label))
            shown = label if rng.random() >= 0.04 else 1 - label  # 4% annotator noise
            writer.writerow([text, "positive" if shown else "negative"])

    rng = np.random.default_rng(20260102)
    topics = np.repeat(list(TOPICS), 200)
    rng.shuffle(topics)
    with open(HERE / "topic-news.jsonl", "w", encoding="utf-8") as f:
        for topic in topics:
            f.write(json.dumps({"text": news(rng, str(topic)), "label": str(topic)}) + "\n")


if __name__ == "__main__":
    main()

"""Text: tokenizer, train-only vocabulary, packing, bucketing, macro-F1, export -> predict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnntune.models import files
from rnntune.models.checkpoint import load_model, save_model
from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.models.data import DataError, load_dataset
from rnntune.models.recurrent import SequenceModel
from rnntune.models.text import PAD_ID, UNK_ID, Vocab, bucket_batches, encode_texts, tokenize
from rnntune.models.train import evaluate, fit

REPO = Path(__file__).resolve().parents[2]
REVIEWS = REPO / "studies" / "data" / "sentiment-reviews.csv"
TOPICS = REPO / "studies" / "data" / "topic-news.jsonl"


def test_tokenizer_rule():
    assert tokenize("Not bad, really!") == ["not", "bad", ",", "really", "!"]
    assert tokenize("Don't  STOP\tnow", lowercase=False) == ["Don't", "STOP", "now"]
    assert tokenize("Café au lait — 10/10") == ["café", "au", "lait", "—", "10", "/", "10"]
    assert tokenize("") == [] and tokenize("   ") == []
    assert tokenize(b"ok") == ["ok"]  # UTF-8 bytes are text too


def test_non_utf8_bytes_are_rejected_with_the_offset(tmp_path):
    with pytest.raises(ValueError, match=r"not UTF-8 text: byte b'\\xff' at offset 3"):
        tokenize(b"bad\xff")
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ngood,pos\nna\u00efve,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text: an invalid byte at offset 22 \(line 3\)"):
        load_dataset("text", path=path)


def test_vocab_specials_order_min_freq_max_size_and_round_trip():
    vocab = Vocab.build([["b", "a", "b"], ["c", "a", "b", "d"]], min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "b", "a"]  # most frequent first, ties alphabetical
    assert vocab.encode(["a", "zzz", "b"]) == [3, UNK_ID, 2]
    assert Vocab.build([["b", "a", "b", "c"]], max_size=1).itos == ["<pad>", "<unk>", "b"]
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.itos == vocab.itos and again.min_freq == 2
    ids, lengths = encode_texts([["a", "b", "a"], [], ["nope"]], vocab, max_length=2)
    np.testing.assert_array_equal(ids, [[3, 2], [PAD_ID, PAD_ID], [UNK_ID, PAD_ID]])
    np.testing.assert_array_equal(lengths, [2, 1, 1])  # an empty text is one <pad> step


def write_csv(path, rows, header=("text", "label")):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_vocabulary_is_built_on_the_train_split_only(tmp_path):
    rows = [(f"common word{i}", "pos" if i % 2 else "neg") for i in range(40)]
    write_csv(tmp_path / "d.csv", rows)
    data = load_dataset("text", {"lowercase": True}, path=tmp_path / "d.csv", seed=1)
    itos = set(data.text["vocab"]["itos"])
    train_words = {f"word{i}" for i in range(40)} & itos
    assert "common" in itos and len(train_words) == len(data.y_train)  # one unique word per train row
    # every val / test row's own word is unknown: its second id is <unk>
    assert (data.x_val[:, 1] == UNK_ID).all() and (data.x_test[:, 1] == UNK_ID).all()
    assert data.text["labels"] == ["neg", "pos"] and data.n_classes == 2
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 40


def test_jsonl_columns_truncation_and_clear_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"body": "a b c d e f", "topic": i % 3}) + "\n" for i in range(30)))
    data = load_dataset("text", {"text_column": "body", "label_column": "topic", "max_length": 4}, path=path)
    assert data.text["labels"] == ["0", "1", "2"] and data.x_train.shape[1] == 4
    assert data.meta["truncated"] == 30 and (data.lengths_train == 4).all()
    with pytest.raises(DataError, match="has no 'text' field"):
        load_dataset("text", path=path)
    write_csv(tmp_path / "x.csv", [("a", "")])
    with pytest.raises(DataError, match="row 2 has an empty 'label'"):
        load_dataset("text", path=tmp_path / "x.csv")
    with pytest.raises(DataError, match="unknown params"):
        load_dataset("text", {"min_frequency": 2}, path=path)
    # the loader and the upload check read JSONL lines alike (models.files.jsonl_records)
    for body, reason in ((b'{"text": "a", "label": 1}\n\n[1, 2]\n', "line 3 is not a JSON object."),
                         (b'{"text": "a", "label": 1}\n{"text": \n', "line 2 is not JSON: Expecting value.")):  # fmt: skip
        (tmp_path / "bad.jsonl").write_bytes(body)
        with pytest.raises(DataError) as exc:
            load_dataset("text", path=tmp_path / "bad.jsonl")
        assert str(exc.value) == f"text: bad.jsonl: {reason}"
        with pytest.raises(files.FileCheckError, match=reason.rstrip(".")):
            files.check_text(body)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_batch_equals_each_sequence_alone(cell, bidirectional):
    torch.manual_seed(0)
    config = ModelConfig(
        1, 3, task="classification", cell=cell, hidden_size=6, num_layers=2, bidirectional=bidirectional,
        vocab_size=20, embed_dim=5,
    )  # fmt: skip
    model = SequenceModel(config).eval()
    lengths = torch.tensor([5, 1, 3, 7])
    ids = torch.randint(2, 20, (4, 7))
    ids[torch.arange(7)[None, :] >= lengths[:, None]] = PAD_ID  # padded with <pad>
    with torch.no_grad():
        batched = model(ids, lengths)
        alone = torch.cat([model(ids[i : i + 1, : lengths[i]]) for i in range(4)])
        padded_unpacked = model(ids)  # without lengths the padding is read as input
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(padded_unpacked, alone, atol=1e-4)


def test_bucketing_keeps_every_example_once_and_groups_lengths():
    lengths = torch.randint(1, 200, (1000,))
    generator = torch.Generator().manual_seed(0)
    batches = bucket_batches(lengths, 16, generator, bucket_batches=8)
    together = torch.cat(batches)
    assert sorted(together.tolist()) == list(range(1000))  # each example exactly once
    assert sum(len(b) < 16 for b in batches) == 1  # only one short batch
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    random_padded = sum(len(b) * int(lengths[b].max()) for b in torch.randperm(1000).split(16))
    assert padded < 0.75 * random_padded  # sorted chunks waste far less padding
    again = bucket_batches(lengths, 16, torch.Generator().manual_seed(0), bucket_batches=8)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=False))  # seeded


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    torch.manual_seed(1)
    model = SequenceModel(ModelConfig(3, 4, task="classification", hidden_size=5))
    x, y = torch.randn(60, 6, 3), torch.randint(0, 3, (60,))  # class 3 never in y
    metrics = evaluate(model, x, y, "classification", batch_size=7)
    predicted = model(x).argmax(1).numpy()
    assert metrics["f1"] == pytest.approx(f1_score(y.numpy(), predicted, average="macro"), abs=1e-6)


@pytest.fixture(scope="module")
def trained():
    data = load_dataset("text", {"max_length": 40}, path=REVIEWS)
    config = ModelConfig(
        1, 2, task="classification", cell="gru", hidden_size=16, vocab_size=data.vocab_size, embed_dim=16
    )
    result = fit(config, TrainConfig(max_epochs=3, lr=1e-2, batch_size=32), data)
    return data, config, result


def test_fit_on_text_learns_and_is_deterministic(trained):
    data, config, result = trained
    assert data.meta["vocab_size"] == data.vocab_size > 50 and data.input_size == 1
    assert set(result.history[-1].val_metrics) == {"accuracy", "f1"}
    assert result.history[-1].val_metrics["accuracy"] > 0.6  # 50% is chance
    again = fit(config, TrainConfig(max_epochs=3, lr=1e-2, batch_size=32), data)
    assert [h.val_loss for h in again.history] == [h.val_loss for h in result.history]


def test_export_load_predict_from_raw_strings(trained):
    data, config, result = trained
    buffer = io.BytesIO()
    save_model(buffer, config, result.state_dict, text=data.text, meta={"study": "s"})
    predictor = load_model(io.BytesIO(buffer.getvalue()), device="cpu")
    assert predictor.labels == ["negative", "positive"]
    texts = ["The acting was brilliant. I loved it!", "", "Skip it.", b"zzz unknown words only"]
    labels = predictor.predict(texts)
    assert len(labels) == 4 and set(labels) <= {"negative", "positive"}
    # the same as the model on the encoded val split
    model = SequenceModel(config).eval()
    model.load_state_dict(result.state_dict)
    with torch.no_grad():
        expected = model(torch.as_tensor(data.x_val), torch.as_tensor(data.lengths_val)).argmax(1).numpy()
    vocab = data.text["vocab"]["itos"]
    raw = [" ".join(vocab[i] for i in row[:n]) for row, n in zip(data.x_val, data.lengths_val, strict=False)]
    np.testing.assert_array_equal(predictor.predict_indices(raw), expected)
    assert predictor.predict_proba(raw[:3]).shape == (3, 2)
    with pytest.raises(ValueError, match="list of strings"):
        predictor.predict("one string")
    with pytest.raises(ValueError, match=r"texts\[0\] is not UTF-8"):
        predictor.predict([b"\xff"])


def test_user_embeddings_are_loaded_and_can_be_frozen(tmp_path):
    words = ["great", "boring", "the", "was"]
    vectors = np.arange(len(words) * 3, dtype=np.float32).reshape(len(words), 3)
    np.save(tmp_path / "e.npy", vectors)
    (tmp_path / "e.txt").write_text("\n".join(words) + "\n")
    data = load_dataset(
        "text", {"embeddings": str(tmp_path / "e.npy"), "embeddings_vocab": str(tmp_path / "e.txt")}, path=REVIEWS
    )
    assert data.embeddings.shape == (data.vocab_size, 3) and 0 < data.meta["embeddings_coverage"] < 1
    config = ModelConfig(
        1, 2, task="classification", hidden_size=4, vocab_size=data.vocab_size, embed_dim=3, freeze_embeddings=True
    )
    result = fit(config, TrainConfig(max_epochs=1), data)
    weight = result.state_dict["embedding.weight"].numpy()
    stoi = {t: i for i, t in enumerate(data.text["vocab"]["itos"])}
    np.testing.assert_array_equal(weight[stoi["great"]], vectors[0])  # frozen: unchanged by training
    np.testing.assert_array_equal(weight[PAD_ID], 0.0)


def test_topic_corpus_is_four_balanced_classes():
    data = load_dataset("text", path=TOPICS)
    assert data.text["labels"] == ["business", "science", "sports", "world"]
    counts = np.bincount(np.concatenate([data.y_train, data.y_val, data.y_test]))
    assert counts.tolist() == [200, 200, 200, 200]


def test_model_config_checks_text_fields():
    with pytest.raises(ValueError, match="embed_dim and freeze_embeddings need vocab_size"):
        ModelConfig(1, 2, embed_dim=8)
    with pytest.raises(ValueError, match="input_size must be 1"):
        ModelConfig(3, 2, vocab_size=10, embed_dim=4)
    with pytest.raises(ValueError, match="embed_dim must be an integer"):
        ModelConfig(1, 2, vocab_size=10)

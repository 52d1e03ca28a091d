"""tools/build_corpus.py end to end: statutes, a folder of law texts, judgments (dedup + split), errors."""

import json
import subprocess
import sys

import pytest

from tools.build_corpus import main, pack_law, parse_args, parse_law_text, split_document
from utils.common.datafiles import DataError

LAW_TEXT = """# 示例物业管理法

目录
第一章 总则
第二章 业主

第一章 总则
第一条 为了规范物业管理活动，制定本法。
第二条　本法所称物业管理，是指业主通过选聘物业服务企业进行管理的活动。
物业服务企业应当依法经营。
第二章 业主
第一节 业主的权利
第三条 业主享有下列权利：
（一）按照物业服务合同的约定，接受物业服务企业提供的服务；
第三条之一 业主应当按时交纳物业服务费用。
"""


def _read(path):
    return [json.loads(line)["content"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_statutes_corpus(tmp_path, capsys):
    main(parse_args(["--output_dir", str(tmp_path), "--max_chars", "3000"]))
    docs = _read(tmp_path / "statutes.jsonl")
    printed = capsys.readouterr().out
    assert "354 laws in force" in printed and "characters" in printed
    assert all(len(d) <= 3000 for d in docs)
    assert sum(len(d) for d in docs) > 2_900_000
    theft = next(d for d in docs if "\n第二百六十四条 盗窃公私财物" in d)
    assert theft.startswith("《中华人民共和国刑法》 第五章 侵犯财产罪")
    assert not any(d.startswith("《中华人民共和国环境保护法》") for d in docs)  # repealed: not in the corpus
    assert not any("\n第一百九十九条 （删去）" in d for d in docs)
    # 民法典's parts each have a 第一章 一般规定: documents keep the law's order, no chapter is merged
    civil = [d for d in docs if d.startswith("《中华人民共和国民法典》")]
    assert civil[0].split("\n")[1].startswith("第一条 ")
    assert "\n第一千二百六十条 " in civil[-1]


def test_law_dir_split_into_chapters_and_articles(tmp_path):
    law_dir = tmp_path / "laws"
    law_dir.mkdir()
    (law_dir / "wuye.txt").write_text(LAW_TEXT, encoding="utf-8")
    title, units, dropped = parse_law_text(law_dir / "wuye.txt", LAW_TEXT)
    assert title == "示例物业管理法"
    assert [u[2].split(" ")[0] for u in units] == ["第一条", "第二条", "第三条", "第三条之一"]
    assert units[1][2].endswith("物业服务企业应当依法经营。")  # continuation paragraph kept with its article
    assert units[2][:2] == ("第二章 业主", "第一节 业主的权利")
    assert dropped == 1  # the line 「目录」; the headings listed under it only set the chapter context
    main(parse_args(["--output_dir", str(tmp_path / "out"), "--no_statutes", "--law_dir", str(law_dir),
                     "--max_chars", "200"]))
    docs = _read(tmp_path / "out" / "law_texts.jsonl")  # the whole law fits in 200 characters: one document
    lines = [u[2] for u in units]
    assert docs == ["\n".join(["《示例物业管理法》", "第一章 总则", *lines[:2], "第二章 业主", "第一节 业主的权利", *lines[2:]])]
    chapters = list(pack_law(title, units, 120))  # too long for one document: one per chapter
    assert chapters[0].startswith("《示例物业管理法》 第一章 总则\n第一条 ")
    assert chapters[1].startswith("《示例物业管理法》 第二章 业主\n第一节 业主的权利\n第三条 ")


def test_judgments_normalised_deduplicated_split(tmp_path, capsys):
    long_case = "\n".join(f"第{i}段：经审理查明，被告人于某日入户盗窃现金若干元。" for i in range(40))
    records = [
        {"content": "原告张三诉被告李四　民间借贷纠纷一案，\r\n本院依法审理。ＡＢＣ１２３"},
        {"content": "原告张三诉被告李四 民间借贷纠纷一案，\n\n  本院依法审理。ABC123"},  # same after normalising
        {"content": long_case},
    ]
    src = tmp_path / "cases.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    main(parse_args(["--output_dir", str(tmp_path), "--no_statutes", "--judgments", str(src), "--max_chars", "300"]))
    docs = _read(tmp_path / "judgments.jsonl")
    assert docs[0] == "原告张三诉被告李四 民间借贷纠纷一案，\n本院依法审理。ABC123"
    assert len(docs) > 3 and all(len(d) <= 300 for d in docs)
    assert "\n".join(docs[1:]) == long_case  # split only at paragraph boundaries
    assert "3 records read, 1 duplicates dropped, 1 split" in capsys.readouterr().out


def test_judgments_across_many_files_dedup_and_a_bad_line_deep_in_one(tmp_path, capsys):
    folder = tmp_path / "cases"
    folder.mkdir()
    cases = [f"（2020）京01刑初{i}号 被告人王某{i}盗窃一案，经审理查明……" for i in range(3000)]
    for k in range(3):  # each file repeats a third of the previous one's cases
        lines = cases[k * 1000:(k + 1) * 1000] + cases[max(0, k - 1) * 1000:max(0, k - 1) * 1000 + 300 * (k > 0)]
        (folder / f"part{k}.jsonl").write_text("".join(json.dumps({"content": c}, ensure_ascii=False) + "\n"
                                                       for c in lines), encoding="utf-8")
    main(parse_args(["--output_dir", str(tmp_path / "out"), "--no_statutes", "--judgments", str(folder)]))
    assert _read(tmp_path / "out" / "judgments.jsonl") == cases
    out = capsys.readouterr()
    assert "3600 records read, 600 duplicates dropped, 0 split" in out.out and "judgments" in out.err  # progress bar
    with open(folder / "part1.jsonl", "a", encoding="utf-8") as f:
        f.write('{"content": "好"}\n' * 2000 + '{"content": 1}\n')
    with pytest.raises(DataError, match=r"part1\.jsonl:3301: field 'content' must be a string, got int"):
        main(parse_args(["--output_dir", str(tmp_path / "out2"), "--no_statutes", "--judgments", str(folder)]))


def test_split_long_paragraph_at_sentences():
    text = "甲" * 150 + "。" + "乙" * 150 + "。" + "丙" * 700
    pieces = split_document(text, 300)
    assert pieces[0] == "甲" * 150 + "。" and all(len(p) <= 300 for p in pieces)
    assert "".join(pieces).replace("\n", "") == text


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("没有条文标题的一段文字。", ["--law_dir"], "no 第…条 article headings"),
        ('{"content": "好"}\n{"text": "坏"}', ["--judgments"], r"cases\.jsonl:2: missing field 'content'"),
    ],
)
def test_bad_inputs_fail_with_file_and_line(tmp_path, content, args, message):
    path = tmp_path / ("law.txt" if args == ["--law_dir"] else "cases.jsonl")
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        main(parse_args(["--output_dir", str(tmp_path / "out"), "--no_statutes", *args, str(path)]))
    assert not (tmp_path / "out" / "judgments.jsonl").exists()


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run(
        [sys.executable, "tools/build_corpus.py", "--no_statutes", "--judgments", str(tmp_path / "missing.jsonl")],
        capture_output=True, text=True, cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent),
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"build_corpus: error: {tmp_path / 'missing.jsonl'}: no such file or directory"]

"""self_instruct.py and the generator backends: prompt/parse/filter/dedup units, the OpenAI-compatible
path against a local stub server (request format, parsing, resume, HTTP errors), and the local path
on the tiny random model (real generation; its junk must be rejected, never written)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools import self_instruct
from tools.self_instruct import Pool, encode_prompt, parse_response, reject_reason
from utils.datagen.llm_backends import GeneratorError, LocalGenerator, OpenAIGenerator


class StubServer:
    """An OpenAI-compatible /chat/completions on 127.0.0.1 (free port) that records every request.

    ``respond(body, n)`` → (status, payload dict) decides each reply; n counts requests from 0.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.respond = lambda body, n: (200, chat_reply("好的"))
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                n = len(stub.requests)
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload = stub.respond(body, n)
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def chat_reply(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


# Distinct legal tasks the stub hands out, a few per request, plus deliberately bad ones.
QUESTIONS = ["无因管理人可以向受益人主张哪些费用？", "不当得利的返还范围如何确定？", "什么情况下构成表见代理？",
             "善意取得动产需要满足哪些条件？", "同一财产设立多个抵押权时如何清偿？", "承揽人什么时候可以行使留置权？",
             "居住权合同应当包括哪些条款？", "保证人在保证期间届满后还要承担责任吗？", "债权转让需要通知债务人吗？",
             "订立合同时隐瞒重要事实造成对方损失怎么办？", "格式条款提供方有什么提示说明义务？", "悬赏寻物完成后拒付酬金合法吗？",
             "合同订立后基础条件发生重大变化可以变更合同吗？", "拾得他人遗失的钱包应当怎么处理？", "被狗咬伤后饲养人如何担责？",
             "网购商品存在缺陷致人受伤，可以向谁索赔？", "患者在医院受到损害，医院何时承担赔偿责任？", "未成年子女打伤同学，父母是否赔偿？",
             "遗赠扶养协议和遗嘱冲突时以哪个为准？", "孙子女在什么情况下可以代位继承？", "婚姻关系存续期间一方举债是否属于共同债务？",
             "收养子女需要具备什么条件？", "房屋买卖合同签订后卖方一房二卖怎么办？", "租赁期间出租人出卖房屋，承租人有优先购买权吗？"]


def good_task(i: int, number: int) -> str:
    question = QUESTIONS[i % len(QUESTIONS)]
    return (f"{number}. 指令：{question}\n{number}. 输入：<无输入>\n"
            f"{number}. 输出：应当依照《中华人民共和国民法典》的相关规定处理，重点审查构成要件和法律后果（第{i}问）。\n")


def si_reply(body: dict, n: int) -> tuple[int, dict]:
    """Continues the prompt like a chat model: two good tasks, then a seed copy, a banned word, and junk."""
    prompt = body["messages"][-1]["content"]
    first = int(prompt.rsplit("###\n", 1)[1].split(".")[0])
    parts = [good_task(2 * n, first), good_task(2 * n + 1, first + 1),
             f"{first + 2}. 指令：请介绍盗窃罪的定义及其量刑档次。\n{first + 2}. 输入：<无输入>\n{first + 2}. 输出：盗窃罪是以非法占有为目的的犯罪。\n",
             f"{first + 3}. 指令：请根据这张图片判断交通事故责任。\n{first + 3}. 输入：<无输入>\n{first + 3}. 输出：无法判断。\n",
             "这一段没有按格式书写"]
    text = "###\n".join(parts)
    return 200, chat_reply(text.split(". 指令：", 1)[1] if n % 2 else text)  # odd: continue mid-line


def si_args(tmp_path, url: str, target: int, *extra: str) -> list[str]:
    return ["--backend", "openai", "--api_base", url, "--model", "stub-model", "--output", str(tmp_path / "si.jsonl"),
            "--num_instructions_to_generate", str(target), "--request_batch_size", "2", "--concurrency", "2",
            "--max_retries", "0", "--seed", "3", *extra]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- units


def test_encode_prompt_numbers_examples_and_opens_the_next_task():
    examples = [{"instruction": "问一", "input": "", "output": "答一"}, {"instruction": "问二", "input": "案情", "output": "答二"}]
    prompt = encode_prompt(examples, 10)
    assert "1. 指令：问一\n1. 输入：<无输入>\n1. 输出：答一" in prompt
    assert "2. 输入：案情" in prompt
    assert prompt.endswith("###\n3. 指令：") and "10条" in prompt


@pytest.mark.parametrize("restart", [False, True])
def test_parse_response_continuation_or_restart(restart):
    reply = "说明违约金的调整规则。\n4. 输入：<无输入>\n4. 输出：见民法典第五百八十五条。\n###\n5. 指令：判断罪名。\n5. 输入：张某盗窃。\n5. 输出：盗窃罪\n###\n乱写"
    if restart:
        reply = "4. 指令：" + reply
    tasks, bad = parse_response(reply, 4)
    assert [t["instruction"] for t in tasks] == ["说明违约金的调整规则。", "判断罪名。"]
    assert tasks[0]["input"] == "" and tasks[1]["input"] == "张某盗窃。" and tasks[1]["output"] == "盗窃罪"
    assert bad == 1


@pytest.mark.parametrize(
    "instruction, output, reason",
    [
        ("请说明表见代理的构成要件。", "表见代理需要……", None),
        ("问", "答案很长", "instruction_length"),
        ("请说明表见代理的构成要件。", "", "output_length"),
        ("，请说明表见代理的构成要件。", "答案", "starts_with_punctuation"),
        ("Explain the statute of limitations.", "三年", "not_chinese"),
        ("请根据视频内容判断责任。", "无法判断", "banned_word"),
        ("请说明表见代理的构成要件。", "作为一个AI，我无法回答", "banned_word"),
        ("请说明表见代理的构成要件。", "答案\n2. 指令：下一题", "template_leak"),
    ],
)
def test_reject_reason(instruction, output, reason):
    assert reject_reason({"instruction": instruction, "input": "", "output": output}) == reason


def test_pool_rouge_dedup_threshold():
    pool = Pool(0.7)
    pool.add({"instruction": "请介绍盗窃罪的定义及其量刑档次。", "input": ""})
    assert pool.most_similar({"instruction": "请介绍盗窃罪的定义和量刑档次。", "input": ""}) >= 0.7
    assert pool.most_similar({"instruction": "协议离婚的冷静期有多长？", "input": ""}) < 0.7
    # Same instruction, different case material: a different task.
    pool.add({"instruction": "判断被告人构成什么罪名。", "input": "张某深夜撬门入户，窃得现金三千元。"})
    assert pool.most_similar({"instruction": "判断被告人构成什么罪名。", "input": "李某冒充客服骗取他人存款五万元，挥霍一空。"}) < 0.7


# ---------------------------------------------------------------- OpenAI-compatible path


def test_openai_generator_request_format_and_parsing(stub, monkeypatch):
    stub.respond = lambda body, n: (200, chat_reply(f"回答{n}"))
    gen = OpenAIGenerator(stub.url, "stub-model", api_key="sk-secret", concurrency=1)
    assert gen.complete(["问题甲", "问题乙"], max_new_tokens=32, temperature=0.5, seed=7) == ["回答0", "回答1"]
    first = stub.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["Authorization"] == "Bearer sk-secret"
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["body"] == {"model": "stub-model", "messages": [{"role": "user", "content": "问题甲"}],
                             "max_tokens": 32, "temperature": 0.5, "seed": 7}
    assert stub.requests[1]["body"]["seed"] == 8
    assert "sk-secret" not in repr(gen)


def test_openai_generator_retries_5xx_then_succeeds(stub):
    stub.respond = lambda body, n: (503, {"error": {"message": "busy"}}) if n < 2 else (200, chat_reply("好"))
    gen = OpenAIGenerator(stub.url, "m", max_retries=2, backoff=0.0)
    assert gen.complete(["问"]) == ["好"]
    assert len(stub.requests) == 3


@pytest.mark.parametrize(
    "status, payload, expected",
    [
        (400, {"error": {"message": "model 'm' not found"}}, "HTTP 400 Bad Request: model 'm' not found"),
        (503, {"error": {"message": "overloaded"}}, "gave up after 2 attempt(s); last error: HTTP 503"),
        (200, {"choices": []}, "unexpected reply shape"),
    ],
)
def test_openai_generator_errors_are_clear(stub, status, payload, expected):
    stub.respond = lambda body, n: (status, payload)
    gen = OpenAIGenerator(stub.url, "m", api_key="sk-secret", max_retries=1, backoff=0.0)
    with pytest.raises(GeneratorError, match="chat/completions") as info:
        gen.complete(["问"])
    assert expected in str(info.value) and "sk-secret" not in str(info.value)


def test_openai_generator_unreachable_server():
    gen = OpenAIGenerator("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=2)
    with pytest.raises(GeneratorError, match="gave up after 1 attempt"):
        gen.complete(["问"])


def test_self_instruct_end_to_end_filters_and_resumes(stub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    stub.respond = si_reply
    assert self_instruct.main(si_args(tmp_path, stub.url, 5)) == 0
    out = capsys.readouterr().out
    path = tmp_path / "si.jsonl"
    first = read_jsonl(path)
    assert len(first) == 5 and len({t["instruction"] for t in first}) == 5
    assert all(set(t) == {"instruction", "input", "output"} and t["input"] == "" for t in first)
    assert all("图片" not in t["instruction"] and t["instruction"] != "请介绍盗窃罪的定义及其量刑档次。" for t in first)
    for reason in ("similar", "banned_word", "unparseable"):
        assert reason in out
    body = stub.requests[0]["body"]
    assert body["model"] == "stub-model" and body["temperature"] == 1.0 and body["max_tokens"] == 3072
    assert stub.requests[0]["headers"]["Authorization"] == "Bearer sk-from-env"
    assert body["messages"][0]["content"].startswith("你是中国法律领域的数据构建助手")
    assert "sk-from-env" not in out

    # An interrupted write leaves half a line: the rerun drops it and continues to the new target.
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"instruction": "半行')
    n_before = len(stub.requests)
    assert self_instruct.main(si_args(tmp_path, stub.url, 8)) == 0
    assert "dropped an unfinished last line" in capsys.readouterr().out
    second = read_jsonl(path)
    assert second[:5] == first and len(second) == 8 and len({t["instruction"] for t in second}) == 8
    assert len(stub.requests) > n_before
    # Generated tasks now appear as examples in later prompts.
    later = stub.requests[-1]["body"]["messages"][0]["content"]
    assert any(t["instruction"] in later for t in second)

    # At the target: nothing is requested.
    n_before = len(stub.requests)
    assert self_instruct.main(si_args(tmp_path, stub.url, 8)) == 0
    assert len(stub.requests) == n_before


def test_self_instruct_http_error_is_one_line(stub, tmp_path, capsys):
    stub.respond = lambda body, n: (401, {"error": {"message": "Incorrect API key provided"}})
    assert self_instruct.main(si_args(tmp_path, stub.url, 3)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("self_instruct: error: ") and "HTTP 401" in err and "Incorrect API key provided" in err


# ---------------------------------------------------------------- local model path


def test_local_generator_is_deterministic_with_a_seed(tiny_model_dir):
    gen = LocalGenerator.from_pretrained(str(tiny_model_dir), device="cpu", batch_size=2)
    prompts = ["请介绍盗窃罪的定义。", "什么是正当防卫？", "诉讼时效是多久？"]
    a = gen.complete(prompts, max_new_tokens=8, temperature=1.0, seed=1)
    b = gen.complete(prompts, max_new_tokens=8, temperature=1.0, seed=1)
    assert a == b and len(a) == 3 and all(isinstance(t, str) for t in a)


def test_self_instruct_local_model_junk_is_rejected_not_written(tiny_model_dir, tmp_path, capsys):
    argv = ["--backend", "local", "--model_path", str(tiny_model_dir), "--device", "cpu",
            "--output", str(tmp_path / "si.jsonl"), "--num_instructions_to_generate", "2",
            "--num_prompt_examples", "1", "--num_machine_examples", "0", "--max_new_tokens", "12",
            "--request_batch_size", "2", "--max_requests", "2"]
    assert self_instruct.main(argv) == 1  # a random model cannot reach the target
    captured = capsys.readouterr()
    assert "2 requests" in captured.out and "unparseable 2" in captured.out and "0 kept" in captured.out
    assert "rerun the same command to continue" in captured.err
    assert (tmp_path / "si.jsonl").read_text(encoding="utf-8") == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"api_base": "127.0.0.1:8000/v1"}, "must start with http"), ({"model": ""}, "--model is required"),
    ({"timeout": 0}, "--request_timeout must be > 0"), ({"concurrency": 0}, "--concurrency must be >= 1"),
])
def test_openai_generator_rejects_bad_settings(kwargs, message):
    settings = {"api_base": "http://127.0.0.1:1/v1", "model": "m", **kwargs}
    with pytest.raises(GeneratorError, match=message):
        OpenAIGenerator(**settings)

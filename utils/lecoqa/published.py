"""The published LeCoQA results table (oneal2000/LeCoQA README, "Experiment Results", commit 538b299), keyed by the
file of generated answers each row comes from (``baseline_results/<model>/<setup>.jsonl``). Cited as published."""

COLUMNS = ("LLM-Eval", "METEOR", "BertScore", "BLEU")
MODELS = {"bc13B": "Baichuan-13B-chat", "qwen7B-ins": "qwen2.5-7B-Instruct", "qwen14B": "qwen2.5-14B-Instruct",
          "qwen7B": "qwen2.5-7B", "gpt": "Black Box LLM (GPT)"}
SETUPS = {"direct": "Direct", "fewshot": "Few-shot", "RAG": "RAG", "fewshot-evi": "Few-shot + Evidence",
          "finetune": "Finetune", "pre_n_ft": "Pretrain + Finetune"}
PUBLISHED = {  # run → (LLM-Eval, METEOR, BertScore, BLEU)
    "bc13B/direct": (0.0939, 0.2293, 0.6836, 0.0442),
    "bc13B/fewshot": (0.1165, 0.2212, 0.6964, 0.0537),
    "bc13B/RAG": (0.1003, 0.2323, 0.7028, 0.0743),
    "bc13B/fewshot-evi": (0.1327, 0.2421, 0.7048, 0.0786),
    "qwen7B-ins/direct": (0.1392, 0.2320, 0.6887, 0.0521),
    "qwen7B-ins/fewshot": (0.1618, 0.1735, 0.6901, 0.0340),
    "qwen7B-ins/RAG": (0.1683, 0.2335, 0.7278, 0.0897),
    "qwen7B-ins/finetune": (0.1586, 0.2488, 0.7279, 0.0945),
    "qwen7B-ins/pre_n_ft": (0.1715, 0.2518, 0.7289, 0.0963),
    "qwen7B-ins/fewshot-evi": (0.2718, 0.2442, 0.7351, 0.0916),
    "qwen14B/direct": (0.0841, 0.2293, 0.6696, 0.0373),
    "qwen14B/fewshot": (0.1748, 0.1811, 0.6900, 0.0373),
    "qwen14B/RAG": (0.1877, 0.1788, 0.6923, 0.0364),
    "qwen14B/fewshot-evi": (0.1489, 0.1789, 0.6913, 0.0341),
    "qwen7B/finetune": (0.1941, 0.2671, 0.7334, 0.1056),
    "qwen7B/pre_n_ft": (0.1877, 0.2612, 0.7335, 0.1054),
    "gpt/direct": (0.2686, 0.2382, 0.7003, 0.0474),
    "gpt/fewshot": (0.1942, 0.2288, 0.7147, 0.0533),
    "gpt/RAG": (0.1845, 0.2974, 0.7437, 0.1012),
    "gpt/fewshot-evi": (0.2460, 0.3136, 0.7524, 0.1152),
}


def published(run: str, metric: str) -> float:
    """The published figure of ``run`` (e.g. "gpt/RAG") for ``metric`` (one of COLUMNS)."""
    return PUBLISHED[run][COLUMNS.index(metric)]

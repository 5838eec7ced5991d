"""A tiny Llama built on this machine, for tests and CPU demos (no downloads, ever).

The real engine (vLLM) needs a Hugging Face model directory. Tests and demos must not fetch
one, so this module makes one: a byte-level BPE tokenizer trained with ``tokenizers`` on a
built-in English corpus (its tokens are word pieces, so decoded text is readable, even if the
random model strings them together at random) and a two-layer Llama with seeded random
weights, about 2 MB of safetensors. The same spec and seed give the same files byte for byte,
so a test session builds it once and an engine's greedy outputs are reproducible.

Sizes are chosen for vLLM's CPU attention kernels (head size 32 is the smallest they take)
and for a context window long enough for prompt + output tests (``max_position_embeddings``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["TinyModelSpec", "build_tiny_model", "CORPUS"]

# A marker written last: a directory that has it (with the same spec) is complete and current.
_MARKER = "andes_tiny.json"

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# The tokenizer's training text: plain English about the subject of this project, so the
# learned pieces are common English words and fragments. Written for this module.
CORPUS = """\
A language model writes its answer one token at a time, and the reader reads it one word at a
time. When the words arrive faster than the reader can read them, the extra words wait in a
small buffer on the screen, and nobody notices. When the words arrive slower than the reader
reads, the reader has to stop and wait, and that pause is what people remember about a slow
service. The quality of experience of a streamed answer is therefore not the speed of the
machine but the delay the reader feels while reading.
The first word matters most. A person who asks a question expects the answer to start within
a second or two; after that, a steady pace is enough. A voice that reads the answer aloud is
slower than a person who reads with the eyes, so a spoken answer can wait a little longer
between words without anyone noticing the difference.
The server that runs the model has a fixed amount of memory for the keys and values of every
request it serves at the same time. When too many requests arrive at once, the memory runs
out, and the server has to choose which requests keep running and which wait. A simple server
serves them in the order they arrived, first come, first served. A careful server asks which
request would suffer most from waiting, and gives the memory to that one first. A request
whose reader is far behind the text can pause for a while, and its reader will not see the
pause at all, because the words already on the screen keep the reader busy.
Every step, the scheduler looks at the requests that are running and the requests that are
waiting. It estimates how long the next step will take, how many tokens each request will
receive in the next few seconds, and how much each reader would lose if that request were left
out. Then it picks the batch that keeps the most quality within the memory it has, and it
preempts the requests that can afford to wait. A preempted request loses its cache and must
compute its context again when it returns, so the scheduler counts that cost too.
The weather was cold and clear in the morning, and the river ran fast under the old stone
bridge. Children walked to school with their hands in their pockets, talking about the games
they would play in the afternoon. In the market, the baker opened his shop and the smell of
fresh bread filled the street. An old man sat on a bench near the water and read his paper
slowly, one page after another, looking up now and then at the birds over the river.
She opened the window and listened to the city: the trains in the distance, the voices in the
street below, the wind in the trees of the small park across the road. It was going to be a
long day, with many questions to answer and many problems to solve, but there was time for a
cup of tea before the work began. She wrote a short list of what had to be done, and then she
started at the top of the list and worked her way down, one line at a time.
Numbers and names appear in text too: one, two, three, four, five, six, seven, eight, nine,
ten; Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday; January, February, March,
April, May, June, July, August, September, October, November, December. 2024, 2025, 100, 42.
Questions and answers: What is the time? It is half past nine. Where is the station? It is on
the other side of the bridge. How long does the answer take? It depends on the length of the
question, on the number of people asking at the same time, and on the size of the model.
"""


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape and seed of the tiny model; equal specs build identical files."""

    seed: int = 0
    vocab_size: int = 1024  # tokenizer target (BPE may stop short on a small corpus)
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4  # head size 32: the smallest vLLM's CPU attention takes
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    initializer_range: float = 0.2  # wide logits: greedy picks are not near-ties

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1 (got {value!r})")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size: must be >= 300 (256 bytes + specials + merges), got {self.vocab_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size: must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_key_value_heads: must divide num_attention_heads")
        if not self.initializer_range > 0:
            raise ValueError(f"initializer_range: must be > 0 (got {self.initializer_range})")


def build_tokenizer(vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``CORPUS`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Prompts start with BOS, as Llama's do; decoding skips it as a special token.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Write the tiny model's Hugging Face directory to ``out_dir`` and return its path.

    A directory already holding this spec's complete build is left as it is (a test session
    or a demo can call this every time). Files: config.json, generation_config.json,
    model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json.
    """
    out = Path(out_dir)
    marker = out / _MARKER
    wanted = asdict(spec)
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return out
        except (OSError, ValueError):
            pass  # unreadable marker: rebuild
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)

    tok = build_tokenizer(spec.vocab_size)
    _save_tokenizer(tok, spec, out)
    config = _llama_config(tok, spec)
    _save_model(config, spec, out)
    marker.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return out


def _save_tokenizer(tok, spec: TinyModelSpec, out: Path) -> None:
    """Save ``tok`` as a Hugging Face fast tokenizer, with the special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        model_max_length=spec.max_position_embeddings, clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def _llama_config(tok, spec: TinyModelSpec):
    """The ``LlamaConfig`` of ``spec``, with the token ids of ``tok``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        rms_norm_eps=1e-5,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD),
        tie_word_embeddings=False,
        torch_dtype="float32",
    )


def _save_model(config, spec: TinyModelSpec, out: Path) -> None:
    """Save a ``LlamaForCausalLM`` of ``config`` with seeded weights, and its generation config."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        model = LlamaForCausalLM(config)
        # Our own seeded init (not the library's, which may change between versions): normal
        # weights, unit norms; same spec, same tensors.
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * spec.initializer_range)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    ).save_pretrained(out)

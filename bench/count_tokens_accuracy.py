"""Benchmark: how close the gateway's local ``count_tokens`` estimate comes to a real tokenizer.

What it measures
----------------
Command Code has no counting endpoint, so ``POST /v1/messages/count_tokens`` answers with a
local estimate (``gateway/tokens.py``: regex pieces, no vocabulary).  This script builds a corpus
of realistic Anthropic Messages requests (about 60, in nine categories: short chats, long
English prose, source code in ten languages, JSON, CJK and emoji text, multi-turn tool use with
``tool_use``/``tool_result`` blocks, Claude-Code-like sessions with a long system prompt and 24
tools with JSON schemas, images of several sizes made here as base64 PNG and JPEG, and mixes of
all of these).  For each request it

* asks the gateway's ``/v1/messages/count_tokens`` for the estimate, and
* sends the same request through the gateway's ``/v1/messages`` to the fake Command Code
  upstream (``tests/fake_upstream.py``) in *usage-from-request* mode, which counts the envelope
  it received with Claude's byte-pair tokenizer (the ``tokenizer.json`` of ``anthropic`` SDK
  wheels <= 0.38) laid out as Claude's prompt, images as Anthropic documents them; the
  ``usage.input_tokens`` the gateway returns is the reference.

The gateway runs in-process (``gateway.create_app`` and Flask's test client, exactly the app
gunicorn serves); the fake runs in a thread and checks every request strictly (the violation
count is printed and must be 0).  The PNGs are real (zlib-compressed gradients); the JPEGs are
real baseline JPEGs of a uniform grey (one 2-bit block each), so they stay small at any size.

How to run
----------
From the repository root, with the project's virtualenv, once per machine::

    pip install tokenizers
    pip download anthropic==0.34.2 --no-deps -d ~/.cache/claude-tokenizer

then::

    python bench/count_tokens_accuracy.py              # summary per category and overall
    python bench/count_tokens_accuracy.py -v           # plus one line per request
    python bench/count_tokens_accuracy.py --json       # only the JSON line
    python bench/count_tokens_accuracy.py --tokenizer PATH   # another tokenizer.json / wheel

It takes about ten seconds and exits 0 (1 if a request failed or the fake saw a protocol violation,
2 if the tokenizer is missing).  It is a benchmark, not a test: pytest does not collect it, and
neither the tests nor the gateway need ``tokenizers``.

How to read the result
----------------------
For each request, error = (estimate - reference) / reference.  Per category and overall:

* ``MAPE``: mean absolute percentage error -- how far off a single estimate typically is;
* ``bias``: mean signed error -- positive means the estimate runs high (the safe side: clients
  such as Claude Code compact the conversation when the count nears the context window, so a
  low count risks overflowing it, a high one only compacts a little early);
* ``worst``: the signed error of the request furthest off;
* ``under``: the share of requests whose estimate is below the reference;
* ``tokens``: sum of estimates / sum of references - 1, i.e. the error weighted by size.

Caveats: the reference is Claude's older (Claude 2 era) public tokenizer, not the tokenizers of
today's Claude, GPT, DeepSeek, Kimi or other models Command Code serves, which may split the
same text into noticeably more or fewer tokens (most of all CJK text and code); the prompt
layout around messages and tools is the fake's Claude-style rendering, not any provider's exact
template, and the hidden tool-use system prompt a provider adds (a few hundred tokens) is
counted by neither side.  So read the figures as "how close a vocabulary-free estimate
comes to a real BPE count", not as a promise about any one model's bill.
"""
from __future__ import annotations

import argparse
import base64
import inspect
import json
import os
import pathlib
import random
import statistics
import struct
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from gateway import create_app  # noqa: E402
from tests.conftest import LOCAL_KEY, gateway_config  # noqa: E402
from tests.fake_upstream import MARKER_RE, FakeUpstream  # noqa: E402

MODEL = "claude-sonnet-4-6"
MAX_TOKENS = 1024


# ================================================================================================
# Images (made here: real PNGs via zlib, real uniform-grey baseline JPEGs)
# ================================================================================================

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG with a diagonal gradient (and a little noise on small images)."""
    rnd = random.Random(seed)
    rows = []
    for y in range(height):
        if width * height <= 256 * 256:
            row = bytes(((x + y + rnd.randrange(8)) * 3 + c * 40) % 256 for x in range(width) for c in range(3))
        else:       # large images: a repeated row per band keeps zlib fast
            row = bytes(((x + y // 16) * 3 + c * 40) % 256 for x in range(width) for c in range(3))
        rows.append(b"\x00" + row)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) + _png_chunk(b"IEND", b""))


def jpeg(width: int, height: int) -> bytes:
    """A valid baseline greyscale JPEG of uniform mid-grey.

    One-code Huffman tables (DC category 0 = "0", AC end-of-block = "0") make every 8x8 block two
    bits, so even a 4000x3000 image is ~47 kB.
    """
    def seg(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\x00" + bytes([1] * 64)
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    one_code = bytes([1] + [0] * 15)                     # one code of length 1 ...
    dht = b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\x00"   # ... for value 0 (DC, AC)
    sos = b"\x01\x01\x00\x00\x3f\x00"
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    nbits = 2 * blocks
    scan = bytes(nbits // 8) + (bytes([(1 << (8 - nbits % 8)) - 1]) if nbits % 8 else b"")
    return (b"\xff\xd8" + seg(0xE0, app0) + seg(0xDB, dqt) + seg(0xC0, sof) + seg(0xC4, dht)
            + seg(0xDA, sos) + scan + b"\xff\xd9")


def image_block(data: bytes, media: str) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media,
                                        "data": base64.b64encode(data).decode()}}


# ================================================================================================
# Text material
# ================================================================================================

PROSE = [
    """The history of the printing press is often told as the story of a single inventor, but the \
machine that Johannes Gutenberg assembled in Mainz around 1440 drew on a long line of earlier \
techniques. Screw presses had been used for centuries to crush grapes and olives; block printing \
had spread from China through the Islamic world; and European goldsmiths already knew how to cast \
small pieces of metal with great precision. What Gutenberg contributed was a system: an adjustable \
hand mould that could cast thousands of identical letters, an alloy of lead, tin and antimony that \
melted at a low temperature yet hardened quickly, and an oil-based ink that clung to metal type. \
Within fifty years, presses were operating in more than two hundred European cities, and the price \
of a book had fallen so far that a skilled craftsman could afford a small library.""",
    """Photosynthesis converts light energy into chemical energy in two linked stages. In the \
light-dependent reactions, which take place in the thylakoid membranes of the chloroplast, \
photons excite electrons in chlorophyll molecules. These energized electrons pass along an \
electron transport chain, pumping protons across the membrane and producing a gradient that \
drives the synthesis of ATP. Water molecules are split to replace the lost electrons, releasing \
oxygen as a by-product. In the second stage, the Calvin cycle, the plant uses ATP and NADPH to fix \
carbon dioxide from the air into three-carbon sugars. Although the overall equation looks simple, \
the process involves dozens of enzymes, and its efficiency rarely exceeds a few percent under \
field conditions.""",
    """Dear Ms. Alvarez,

Thank you for your letter of March 14th regarding the delayed shipment of order #48213. I am sorry \
for the inconvenience this has caused your team. After reviewing the tracking records with our \
logistics partner, we found that the pallet was held at the regional distribution center because \
of an incomplete customs declaration. The missing document has now been filed, and the carrier has \
confirmed that the goods will be delivered to your warehouse on Thursday morning. As a gesture of \
goodwill, we have applied a 15% credit to your next invoice and waived the expedited shipping fee. \
Please don't hesitate to contact me directly if anything else comes up.

Kind regards,
Daniel Whitmore
Customer Operations Manager""",
    """She had not meant to stay in the village for more than a week. The bus that was supposed to \
take her over the mountain pass had broken down on the second day, and the mechanic, a patient man \
with flour on his sleeves because he also ran the bakery, said the part would have to come from \
the city. So she rented the room above the post office, bought a notebook from the general store, \
and began to walk. Every morning she climbed a different path: one to the ruined chapel, one to the \
waterfall that only ran in spring, one to the high meadow where the shepherds left their dogs to \
guard the flock. By the time the part arrived, three weeks later, she had filled the notebook and \
started another, and she found that she no longer remembered why she had been in such a hurry.""",
    """To configure the service, copy the example file to config.yaml and edit the values for your \
environment. The listen address defaults to localhost on port 8080; set it to 0.0.0.0 only if the \
service runs behind a firewall or a reverse proxy that terminates TLS. Database credentials are \
read from the DATABASE_URL environment variable when it is set, and from the database section of \
the file otherwise. Log output goes to standard error in a structured JSON format, which most log \
collectors can parse without additional configuration. When you upgrade, read the changelog first: \
a few releases renamed configuration keys, and the service refuses to start rather than silently \
ignoring a key it does not recognize.""",
    """Central banks in several advanced economies kept interest rates unchanged this quarter, \
citing signs that inflation is easing but remains above target. Officials noted that wage growth \
has slowed from its peak, while housing costs continue to weigh on household budgets. Markets had \
largely priced in the decision, and bond yields moved only slightly after the announcements. \
Analysts expect the first cuts to come later in the year if employment data continue to soften, \
although some warned that energy prices and supply disruptions could complicate the outlook. \
Consumer confidence surveys showed a modest improvement for the second month in a row.""",
    """The Licensee shall not sublicense, sell, lease, or otherwise transfer the Software or any \
rights granted under this Agreement without the prior written consent of the Licensor. Any attempt \
to do so shall be null and void. The Licensee may make one (1) copy of the Software solely for \
backup or archival purposes, provided that all proprietary notices are reproduced on such copy. \
Nothing in this Agreement shall be construed as granting, by implication, estoppel or otherwise, \
any license or right under any patent, trademark or copyright of the Licensor, except as expressly \
provided herein. This Agreement shall be governed by the laws of the State of Delaware, without \
regard to its conflict of laws principles.""",
    """Sourdough baking depends on a stable culture of wild yeast and lactic acid bacteria. To keep \
a starter healthy, feed it equal weights of flour and water once or twice a day and keep it at a \
steady, warm temperature. A vigorous starter roughly doubles in volume within four to six hours of \
feeding and smells pleasantly sour, a little like yogurt. For the dough, mix the flour and most of \
the water first and let them rest for half an hour; this autolyse makes the dough easier to \
stretch. Then add the starter and salt, and fold the dough every thirty minutes for the first two \
hours. Shape it gently, proof it overnight in the refrigerator, and bake it in a preheated Dutch \
oven with the lid on for the first twenty minutes.""",
    """Distributed systems fail in ways that single machines do not. A network partition can leave \
two halves of a cluster each believing the other has crashed; a slow disk can look, from the \
outside, exactly like a dead node; and clocks on different machines drift apart by milliseconds or \
more. Consensus protocols such as Paxos and Raft tolerate these failures by requiring a majority of \
replicas to agree before a change is committed, so that any two majorities overlap in at least one \
member. The price is latency: every write must wait for a round trip to a quorum. Engineers often \
trade some consistency for availability, accepting that readers may briefly see stale data in \
exchange for a system that keeps answering while parts of it are unreachable.""",
    """Q: Why does my bicycle chain keep slipping when I pedal hard?

A: The most common cause is a worn chain or cassette. As a chain wears, its pins and rollers \
stretch slightly, so it no longer sits snugly on the teeth of the sprockets. Measure it with a chain \
checker; if it shows 0.75% wear or more, replace the chain. If the new chain still skips on your \
favourite cogs, those cogs are worn too and the cassette should be replaced as well. Other causes \
include a misadjusted rear derailleur, a bent derailleur hanger, or a stiff link. Shift through all \
the gears slowly while turning the cranks backwards to find a stiff link, then flex it sideways to \
free it.""",
]

CJK = {
    "zh": """人工智能正在深刻地改变我们的生活方式。从智能手机上的语音助手，到医院里辅助医生诊断的影像分析系统，\
再到城市交通中的信号灯调度，机器学习技术已经渗透到社会的各个角落。然而，技术的快速发展也带来了新的挑战：\
数据隐私如何保护？算法是否公平？自动化会不会导致大量工作岗位消失？专家们认为，我们需要在鼓励创新的同时，\
建立健全的法律法规和伦理准则，让技术真正服务于人类的福祉。教育体系也应当与时俱进，培养学生的批判性思维、\
创造力以及与机器协作的能力。""",
    "ja": """昨日、友達と一緒に京都へ行きました。朝早く新幹線に乗って、九時ごろに京都駅に着きました。\
まず清水寺を見に行きましたが、とても混んでいました。それから、近くの小さな店で抹茶のアイスクリームを食べました。\
午後は嵐山の竹林を散歩して、川沿いのカフェで休みました。夜は祇園で伝統的な日本料理を食べました。\
とても楽しい一日でしたが、たくさん歩いたので少し疲れました。次は紅葉の季節にもう一度行きたいと思います。""",
    "ko": """안녕하세요. 저는 서울에 사는 대학생입니다. 요즘 프로그래밍을 공부하고 있는데, 특히 파이썬과 \
데이터 분석에 관심이 많습니다. 주말에는 친구들과 함께 스터디 모임을 하고, 평일 저녁에는 온라인 강의를 듣습니다. \
처음에는 어려웠지만 조금씩 실력이 늘어서 지금은 간단한 웹 크롤러도 만들 수 있게 되었습니다. \
앞으로는 머신러닝 프로젝트에도 도전해 보고 싶습니다.""",
    "emoji": """🎉🎉 Happy birthday!!! 🎂🥳 Hope your day is full of 🌞, 🍰 and 🎁! \
Can't wait to see you at the party tonight 🕺💃 — bring your dancing shoes 👟👟. \
P.S. the 🐶 says hi too 🐾❤️ 😂😂😂 see you soon ✨✨✨ 🚀🌍🌈🔥💯👍🙏""",
    "mixed": """我们的API支持JSON格式的请求。请在请求头中设置 Content-Type: application/json，并在 Authorization \
字段中提供你的 API key。每个请求最多可以包含 100 条消息，单条消息的长度不超过 32,000 个字符。如果超出限制，\
服务器会返回 HTTP 400 错误。更多细节请参考文档中的 "Rate limits" 一节。""",
}

CODE = {
    "javascript": """import express from 'express';
import { rateLimit } from 'express-rate-limit';

const app = express();
app.use(express.json({ limit: '1mb' }));
app.use(rateLimit({ windowMs: 60_000, max: 120 }));

const todos = new Map();
let nextId = 1;

app.get('/api/todos', (req, res) => {
  const { done } = req.query;
  let items = [...todos.values()];
  if (done !== undefined) items = items.filter(t => String(t.done) === done);
  res.json({ items, count: items.length });
});

app.post('/api/todos', (req, res) => {
  const { title } = req.body ?? {};
  if (typeof title !== 'string' || !title.trim()) {
    return res.status(400).json({ error: 'title is required' });
  }
  const todo = { id: nextId++, title: title.trim(), done: false, createdAt: new Date().toISOString() };
  todos.set(todo.id, todo);
  res.status(201).json(todo);
});

app.patch('/api/todos/:id', (req, res) => {
  const todo = todos.get(Number(req.params.id));
  if (!todo) return res.status(404).json({ error: 'not found' });
  Object.assign(todo, req.body, { id: todo.id });
  res.json(todo);
});

app.listen(process.env.PORT || 3000, () => console.log(`listening on ${process.env.PORT || 3000}`));
""",
    "typescript": """export interface Page<T> {
  items: T[];
  nextCursor?: string;
}

export type Fetcher<T> = (cursor?: string, signal?: AbortSignal) => Promise<Page<T>>;

/** Iterate over every item of a cursor-paginated API, one page at a time. */
export async function* paginate<T>(fetchPage: Fetcher<T>, signal?: AbortSignal): AsyncGenerator<T> {
  let cursor: string | undefined;
  do {
    const page = await fetchPage(cursor, signal);
    for (const item of page.items) yield item;
    cursor = page.nextCursor;
  } while (cursor && !signal?.aborted);
}

export class RetryError extends Error {
  constructor(public readonly attempts: number, public readonly cause: unknown) {
    super(`gave up after ${attempts} attempts`);
  }
}

export async function withRetry<T>(fn: () => Promise<T>, attempts = 3, baseDelayMs = 200): Promise<T> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      await new Promise(r => setTimeout(r, baseDelayMs * 2 ** i + Math.random() * 50));
    }
  }
  throw new RetryError(attempts, last);
}
""",
    "go": """package cache

import (
\t"container/list"
\t"sync"
\t"time"
)

type entry struct {
\tkey     string
\tvalue   []byte
\texpires time.Time
}

// LRU is a thread-safe least-recently-used cache with per-entry expiry.
type LRU struct {
\tmu       sync.Mutex
\tcapacity int
\tll       *list.List
\titems    map[string]*list.Element
}

func NewLRU(capacity int) *LRU {
\treturn &LRU{capacity: capacity, ll: list.New(), items: make(map[string]*list.Element)}
}

func (c *LRU) Get(key string) ([]byte, bool) {
\tc.mu.Lock()
\tdefer c.mu.Unlock()
\tel, ok := c.items[key]
\tif !ok {
\t\treturn nil, false
\t}
\te := el.Value.(*entry)
\tif time.Now().After(e.expires) {
\t\tc.ll.Remove(el)
\t\tdelete(c.items, key)
\t\treturn nil, false
\t}
\tc.ll.MoveToFront(el)
\treturn e.value, true
}

func (c *LRU) Set(key string, value []byte, ttl time.Duration) {
\tc.mu.Lock()
\tdefer c.mu.Unlock()
\tif el, ok := c.items[key]; ok {
\t\tc.ll.MoveToFront(el)
\t\te := el.Value.(*entry)
\t\te.value, e.expires = value, time.Now().Add(ttl)
\t\treturn
\t}
\tc.items[key] = c.ll.PushFront(&entry{key, value, time.Now().Add(ttl)})
\tif c.ll.Len() > c.capacity {
\t\toldest := c.ll.Back()
\t\tc.ll.Remove(oldest)
\t\tdelete(c.items, oldest.Value.(*entry).key)
\t}
}
""",
    "rust": """use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead};
use std::path::Path;

#[derive(Debug, Default)]
pub struct WordStats {
    pub total: usize,
    pub unique: usize,
    pub top: Vec<(String, usize)>,
}

pub fn word_stats<P: AsRef<Path>>(path: P, top_n: usize) -> io::Result<WordStats> {
    let file = fs::File::open(path)?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        for word in line
            .split(|c: char| !c.is_alphanumeric() && c != '\\'')
            .filter(|w| !w.is_empty())
        {
            *counts.entry(word.to_lowercase()).or_insert(0) += 1;
            total += 1;
        }
    }
    let mut top: Vec<(String, usize)> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(top_n);
    Ok(WordStats { total, unique: counts.len(), top })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn counts_words() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "the cat and the hat").unwrap();
        let stats = word_stats(f.path(), 1).unwrap();
        assert_eq!(stats.total, 5);
        assert_eq!(stats.top[0], ("the".to_string(), 2));
    }
}
""",
    "c": """#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    char *key;
    int value;
    struct node *next;
} node_t;

typedef struct {
    size_t size;
    node_t **buckets;
} table_t;

static unsigned long hash(const char *s) {
    unsigned long h = 5381;
    int c;
    while ((c = *s++))
        h = ((h << 5) + h) + c; /* h * 33 + c */
    return h;
}

table_t *table_new(size_t size) {
    table_t *t = malloc(sizeof *t);
    if (!t) return NULL;
    t->size = size;
    t->buckets = calloc(size, sizeof(node_t *));
    return t;
}

int table_put(table_t *t, const char *key, int value) {
    size_t i = hash(key) % t->size;
    for (node_t *n = t->buckets[i]; n; n = n->next) {
        if (strcmp(n->key, key) == 0) {
            n->value = value;
            return 0;
        }
    }
    node_t *n = malloc(sizeof *n);
    if (!n) return -1;
    n->key = strdup(key);
    n->value = value;
    n->next = t->buckets[i];
    t->buckets[i] = n;
    return 1;
}

int main(int argc, char **argv) {
    table_t *t = table_new(64);
    for (int i = 1; i < argc; i++)
        table_put(t, argv[i], i);
    printf("stored %d keys\\n", argc - 1);
    return 0;
}
""",
    "java": """package com.example.orders;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.List;
import java.util.Objects;
import java.util.stream.Collectors;

public final class OrderService {
    private final OrderRepository repository;
    private final PaymentGateway payments;

    public OrderService(OrderRepository repository, PaymentGateway payments) {
        this.repository = Objects.requireNonNull(repository);
        this.payments = Objects.requireNonNull(payments);
    }

    public Order place(String customerId, List<LineItem> items) {
        if (items.isEmpty()) {
            throw new IllegalArgumentException("an order needs at least one item");
        }
        BigDecimal total = items.stream()
                .map(i -> i.unitPrice().multiply(BigDecimal.valueOf(i.quantity())))
                .reduce(BigDecimal.ZERO, BigDecimal::add);
        Order order = new Order(repository.nextId(), customerId, items, total, Instant.now(), Status.PENDING);
        repository.save(order);
        PaymentResult result = payments.charge(customerId, total);
        Order updated = order.withStatus(result.succeeded() ? Status.PAID : Status.PAYMENT_FAILED);
        repository.save(updated);
        return updated;
    }

    public List<Order> recent(String customerId, int limit) {
        return repository.findByCustomer(customerId).stream()
                .sorted((a, b) -> b.createdAt().compareTo(a.createdAt()))
                .limit(limit)
                .collect(Collectors.toList());
    }
}
""",
    "sql": """-- Monthly active customers and revenue per plan, last 12 months
WITH months AS (
    SELECT generate_series(date_trunc('month', now()) - interval '11 months',
                           date_trunc('month', now()), interval '1 month') AS month
),
activity AS (
    SELECT date_trunc('month', e.created_at) AS month, e.customer_id
    FROM events e
    WHERE e.created_at >= now() - interval '12 months'
      AND e.kind IN ('login', 'api_call', 'export')
    GROUP BY 1, 2
)
SELECT m.month,
       p.name AS plan,
       count(DISTINCT a.customer_id) AS active_customers,
       coalesce(sum(i.amount_cents), 0) / 100.0 AS revenue
FROM months m
LEFT JOIN activity a ON a.month = m.month
LEFT JOIN subscriptions s ON s.customer_id = a.customer_id
    AND s.started_at < m.month + interval '1 month'
    AND (s.ended_at IS NULL OR s.ended_at >= m.month)
LEFT JOIN plans p ON p.id = s.plan_id
LEFT JOIN invoices i ON i.subscription_id = s.id AND date_trunc('month', i.paid_at) = m.month
GROUP BY m.month, p.name
ORDER BY m.month, revenue DESC;
""",
    "bash": """#!/usr/bin/env bash
set -euo pipefail

BACKUP_DIR="${BACKUP_DIR:-/var/backups/postgres}"
RETENTION_DAYS="${RETENTION_DAYS:-14}"
DB_NAME="${1:?usage: $0 <database>}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

mkdir -p "$BACKUP_DIR"
log() { printf '%s %s\\n' "$(date -u +%FT%TZ)" "$*" >&2; }

log "dumping $DB_NAME"
pg_dump --format=custom --compress=9 "$DB_NAME" > "$BACKUP_DIR/$DB_NAME-$STAMP.dump.tmp"
mv "$BACKUP_DIR/$DB_NAME-$STAMP.dump.tmp" "$BACKUP_DIR/$DB_NAME-$STAMP.dump"

log "pruning backups older than $RETENTION_DAYS days"
find "$BACKUP_DIR" -name "$DB_NAME-*.dump" -mtime +"$RETENTION_DAYS" -print -delete | while read -r f; do
  log "removed $f"
done

if command -v aws >/dev/null 2>&1 && [[ -n "${S3_BUCKET:-}" ]]; then
  aws s3 cp "$BACKUP_DIR/$DB_NAME-$STAMP.dump" "s3://$S3_BUCKET/postgres/" --only-show-errors
  log "uploaded to s3://$S3_BUCKET/postgres/"
fi
log "done"
""",
    "html": """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Dashboard</title>
  <style>
    :root { --accent: #3b82f6; --bg: #f8fafc; }
    body { margin: 0; font-family: system-ui, sans-serif; background: var(--bg); }
    header { display: flex; align-items: center; justify-content: space-between; padding: 1rem 2rem; }
    .card { background: white; border-radius: 12px; box-shadow: 0 1px 3px rgba(0,0,0,.1); padding: 1.5rem; }
    .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 1rem; padding: 2rem; }
    .metric { font-size: 2rem; font-weight: 600; color: var(--accent); }
  </style>
</head>
<body>
  <header>
    <h1>Overview</h1>
    <nav><a href="/reports">Reports</a> | <a href="/settings">Settings</a></nav>
  </header>
  <main class="grid">
    <section class="card"><h2>Users</h2><p class="metric" id="users">&mdash;</p></section>
    <section class="card"><h2>Revenue</h2><p class="metric" id="revenue">&mdash;</p></section>
    <section class="card"><h2>Errors (24h)</h2><p class="metric" id="errors">&mdash;</p></section>
  </main>
  <script>
    fetch('/api/metrics').then(r => r.json()).then(m => {
      for (const [k, v] of Object.entries(m)) document.getElementById(k).textContent = v.toLocaleString();
    });
  </script>
</body>
</html>
""",
}

DIFF = """diff --git a/src/parser.py b/src/parser.py
index 3f2a1c4..8b7d9e0 100644
--- a/src/parser.py
+++ b/src/parser.py
@@ -41,12 +41,18 @@ class Parser:
     def parse_header(self, line: str) -> Header:
-        name, _, value = line.partition(":")
-        return Header(name.strip(), value.strip())
+        name, sep, value = line.partition(":")
+        if not sep:
+            raise ParseError(f"line {self.lineno}: expected 'name: value', got {line!r}")
+        name = name.strip()
+        if not name:
+            raise ParseError(f"line {self.lineno}: empty header name")
+        return Header(name.lower(), value.strip())

     def parse(self, text: str) -> Document:
         doc = Document()
-        for line in text.splitlines():
+        for self.lineno, line in enumerate(text.splitlines(), 1):
             if not line.strip():
                 continue
"""

PYTEST_OUTPUT = """============================= test session starts ==============================
platform linux -- Python 3.11.9, pytest-8.3.2, pluggy-1.5.0
rootdir: /home/dev/project
configfile: pyproject.toml
collected 142 items

tests/test_api.py ..........................                             [ 18%]
tests/test_models.py ...............F....                                [ 32%]
tests/test_parser.py ........................................            [ 60%]
tests/test_utils.py ........................................................ [100%]

=================================== FAILURES ===================================
____________________________ test_order_total_rounding ____________________________

    def test_order_total_rounding():
        order = Order(items=[Item(price=Decimal("0.10"), qty=3)])
>       assert order.total == Decimal("0.30")
E       AssertionError: assert Decimal('0.30000000000000004') == Decimal('0.30')
E        +  where Decimal('0.30000000000000004') = Order(items=[...]).total

tests/test_models.py:88: AssertionError
=========================== short test summary info ============================
FAILED tests/test_models.py::test_order_total_rounding - AssertionError: assert Decimal(...
======================== 1 failed, 141 passed in 3.42s =========================
"""


def python_source(module_name: str, limit: int | None = None) -> str:
    """Source of a standard-library module (real, idiomatic Python)."""
    module = __import__(module_name, fromlist=["_"])
    src = inspect.getsource(module)
    return src[:limit] if limit else src


# ---- JSON material -----------------------------------------------------------------------------

FIRST = ["Alice", "Bruno", "Chen", "Dmitri", "Elena", "Farah", "Gustavo", "Hana", "Ivan", "Jamal",
         "Keiko", "Liam", "Maria", "Noah", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Tariq"]
LAST = ["Anderson", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
        "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi"]
CITIES = ["Lisbon", "Toronto", "Osaka", "Nairobi", "Berlin", "Austin", "Melbourne", "Bogotá", "Oslo"]
TAGS = ["beta", "enterprise", "trial", "churn-risk", "vip", "annual", "monthly", "edu", "partner"]


def json_users(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        out.append({
            "id": 10000 + i * 7 + rnd.randrange(7),
            "uuid": "%08x-%04x-4%03x-%04x-%012x" % (rnd.getrandbits(32), rnd.getrandbits(16),
                                                     rnd.getrandbits(12), 0x8000 | rnd.getrandbits(14),
                                                     rnd.getrandbits(48)),
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{rnd.randrange(100)}@example.com",
            "active": rnd.random() > 0.2,
            "balance": round(rnd.uniform(-500, 25000), 2),
            "created_at": f"20{rnd.randrange(18, 25)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}"
                          f"T{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}Z",
            "address": {"street": f"{rnd.randrange(1, 999)} {rnd.choice(LAST)} Street",
                        "city": rnd.choice(CITIES), "postal_code": f"{rnd.randrange(10000, 99999)}"},
            "tags": rnd.sample(TAGS, rnd.randrange(0, 4)),
            "login_count": rnd.randrange(0, 5000),
        })
    return out


def json_issue() -> dict:
    return {
        "id": 2014431201, "number": 4821, "state": "open", "locked": False,
        "title": "Streaming responses are cut off when the upstream sends a keep-alive comment",
        "user": {"login": "octocat", "id": 583231, "type": "User", "site_admin": False,
                 "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
                 "html_url": "https://github.com/octocat"},
        "labels": [{"id": 1201, "name": "bug", "color": "d73a4a", "default": True,
                    "description": "Something isn't working"},
                   {"id": 1207, "name": "streaming", "color": "0e8a16", "default": False,
                    "description": "SSE and chunked responses"}],
        "assignees": [], "milestone": {"title": "v2.4", "due_on": "2024-07-01T07:00:00Z", "open_issues": 12},
        "comments": 7, "created_at": "2024-05-02T14:21:09Z", "updated_at": "2024-05-06T09:12:44Z",
        "author_association": "CONTRIBUTOR",
        "body": "When the upstream emits `: keep-alive` lines during a long generation, the client "
                "stops reading after the first one. Steps to reproduce:\n\n1. Start the proxy with "
                "`--stream`\n2. Send a prompt that takes more than 30 seconds\n3. Observe that the "
                "response ends early with no error.\n\nExpected: comments are ignored and the stream "
                "continues.",
        "reactions": {"+1": 14, "-1": 0, "laugh": 0, "hooray": 0, "confused": 1, "heart": 2,
                      "rocket": 0, "eyes": 3, "total_count": 20},
    }


def json_geo(n: int, seed: int) -> dict:
    rnd = random.Random(seed)
    feats = []
    for i in range(n):
        lon, lat = rnd.uniform(-10, 30), rnd.uniform(35, 60)
        ring = [[round(lon + rnd.uniform(-0.05, 0.05), 6), round(lat + rnd.uniform(-0.05, 0.05), 6)]
                for _ in range(6)]
        ring.append(ring[0])
        feats.append({"type": "Feature", "id": i,
                      "properties": {"name": f"Parcel {i}", "area_m2": round(rnd.uniform(100, 90000), 1),
                                     "zoning": rnd.choice(["R1", "R2", "C1", "I2", "AG"])},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return {"type": "FeatureCollection", "features": feats}


def package_json() -> dict:
    return {
        "name": "@acme/web-dashboard", "version": "3.14.2", "private": True, "type": "module",
        "scripts": {"dev": "vite", "build": "tsc -b && vite build", "test": "vitest run",
                    "lint": "eslint . --max-warnings 0", "preview": "vite preview --port 4173"},
        "dependencies": {"react": "^18.3.1", "react-dom": "^18.3.1", "react-router-dom": "^6.23.1",
                         "@tanstack/react-query": "^5.40.0", "zod": "^3.23.8", "date-fns": "^3.6.0",
                         "recharts": "^2.12.7", "clsx": "^2.1.1"},
        "devDependencies": {"@types/react": "^18.3.3", "@types/react-dom": "^18.3.0",
                            "@vitejs/plugin-react": "^4.3.1", "eslint": "^9.4.0", "typescript": "^5.4.5",
                            "vite": "^5.2.13", "vitest": "^1.6.0", "tailwindcss": "^3.4.4"},
        "engines": {"node": ">=20"},
        "browserslist": ["> 0.5%", "last 2 versions", "not dead"],
    }


# ---- tools -------------------------------------------------------------------------------------

def _schema(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}


def _s(desc: str, **extra) -> dict:
    return {"type": "string", "description": desc, **extra}


def _n(desc: str, **extra) -> dict:
    return {"type": "number", "description": desc, **extra}


def _b(desc: str) -> dict:
    return {"type": "boolean", "description": desc}


CODING_TOOLS = [
    {"name": "Task", "description": "Launch a new agent to handle complex, multi-step tasks autonomously. "
     "Use it when you are searching for a keyword or file and are not confident you will find the right "
     "match in the first few tries. The agent has access to the same tools as you, except Task itself. "
     "Each invocation is stateless: provide a highly detailed task description and say exactly what "
     "information the agent should return in its final message.",
     "input_schema": _schema({"description": _s("A short (3-5 word) description of the task"),
                              "prompt": _s("The task for the agent to perform"),
                              "subagent_type": _s("The type of specialized agent to use for this task")},
                             ["description", "prompt", "subagent_type"])},
    {"name": "Bash", "description": "Executes a given bash command in a persistent shell session with "
     "optional timeout, ensuring proper handling and security measures. Before executing the command, "
     "verify that the parent directory exists. Always quote file paths that contain spaces. Avoid search "
     "commands like find and grep; use Grep, Glob or Task instead. Avoid read tools like cat, head and "
     "tail; use Read instead. When issuing multiple commands, separate them with ';' or '&&'.",
     "input_schema": _schema({"command": _s("The command to execute"),
                              "timeout": _n("Optional timeout in milliseconds (max 600000)"),
                              "description": _s("Clear, concise description of what this command does in 5-10 words"),
                              "run_in_background": _b("Set to true to run this command in the background")},
                             ["command"])},
    {"name": "Glob", "description": "Fast file pattern matching tool that works with any codebase size. "
     "Supports glob patterns like \"**/*.js\" or \"src/**/*.ts\". Returns matching file paths sorted by "
     "modification time. Use this tool when you need to find files by name patterns.",
     "input_schema": _schema({"pattern": _s("The glob pattern to match files against"),
                              "path": _s("The directory to search in. Defaults to the current working directory.")},
                             ["pattern"])},
    {"name": "Grep", "description": "A powerful search tool built on ripgrep. Supports full regex syntax "
     "(e.g. \"log.*Error\", \"function\\\\s+\\\\w+\"). Filter files with the glob or type parameter. Output "
     "modes: \"content\" shows matching lines, \"files_with_matches\" shows only file paths (default), "
     "\"count\" shows match counts. Use Task for open-ended searches requiring multiple rounds.",
     "input_schema": _schema({"pattern": _s("The regular expression pattern to search for in file contents"),
                              "path": _s("File or directory to search in. Defaults to current working directory."),
                              "glob": _s("Glob pattern to filter files (e.g. \"*.js\", \"*.{ts,tsx}\")"),
                              "output_mode": _s("Output mode", enum=["content", "files_with_matches", "count"]),
                              "-i": _b("Case insensitive search"),
                              "-n": _b("Show line numbers in output"),
                              "-A": _n("Number of lines to show after each match"),
                              "-B": _n("Number of lines to show before each match"),
                              "type": _s("File type to search (rg --type), e.g. js, py, rust, go"),
                              "head_limit": _n("Limit output to first N lines/entries"),
                              "multiline": _b("Enable multiline mode where . matches newlines")},
                             ["pattern"])},
    {"name": "LS", "description": "Lists files and directories in a given path. The path parameter must be "
     "an absolute path, not a relative path. You can optionally provide an array of glob patterns to ignore.",
     "input_schema": _schema({"path": _s("The absolute path to the directory to list"),
                              "ignore": {"type": "array", "items": {"type": "string"},
                                         "description": "List of glob patterns to ignore"}}, ["path"])},
    {"name": "ExitPlanMode", "description": "Use this tool when you are in plan mode and have finished "
     "presenting your plan and are ready to code. This will prompt the user to exit plan mode. Only use it "
     "when the task requires planning the implementation steps of a task that requires writing code.",
     "input_schema": _schema({"plan": _s("The plan you came up with, that you want to run by the user for "
                                         "approval. Supports markdown. The plan should be pretty concise.")},
                             ["plan"])},
    {"name": "Read", "description": "Reads a file from the local filesystem. The file_path parameter must be "
     "an absolute path. By default, it reads up to 2000 lines starting from the beginning of the file. You "
     "can optionally specify a line offset and limit. Results are returned using cat -n format, with line "
     "numbers starting at 1. This tool can read images (PNG, JPG) and PDF files, and Jupyter notebooks.",
     "input_schema": _schema({"file_path": _s("The absolute path to the file to read"),
                              "offset": _n("The line number to start reading from"),
                              "limit": _n("The number of lines to read")}, ["file_path"])},
    {"name": "Edit", "description": "Performs exact string replacements in files. You must use your Read "
     "tool at least once in the conversation before editing. When editing text from Read tool output, "
     "preserve the exact indentation as it appears after the line number prefix. The edit will FAIL if "
     "old_string is not unique in the file; provide more surrounding context or use replace_all.",
     "input_schema": _schema({"file_path": _s("The absolute path to the file to modify"),
                              "old_string": _s("The text to replace"),
                              "new_string": _s("The text to replace it with (must be different from old_string)"),
                              "replace_all": _b("Replace all occurrences of old_string (default false)")},
                             ["file_path", "old_string", "new_string"])},
    {"name": "MultiEdit", "description": "This is a tool for making multiple edits to a single file in one "
     "operation. It is built on top of the Edit tool and allows you to perform multiple find-and-replace "
     "operations efficiently. All edits are applied in sequence; if any edit fails, none are applied.",
     "input_schema": _schema({"file_path": _s("The absolute path to the file to modify"),
                              "edits": {"type": "array", "minItems": 1, "description": "Array of edit operations",
                                        "items": {"type": "object", "additionalProperties": False,
                                                  "required": ["old_string", "new_string"],
                                                  "properties": {"old_string": _s("The text to replace"),
                                                                 "new_string": _s("The replacement text"),
                                                                 "replace_all": _b("Replace all occurrences")}}}},
                             ["file_path", "edits"])},
    {"name": "Write", "description": "Writes a file to the local filesystem. This tool will overwrite the "
     "existing file if there is one at the provided path. If this is an existing file, you MUST use the Read "
     "tool first. ALWAYS prefer editing existing files. NEVER proactively create documentation files.",
     "input_schema": _schema({"file_path": _s("The absolute path to the file to write (must be absolute)"),
                              "content": _s("The content to write to the file")}, ["file_path", "content"])},
    {"name": "NotebookRead", "description": "Reads a Jupyter notebook (.ipynb file) and returns all of the "
     "cells with their outputs. Jupyter notebooks are interactive documents that combine code, text, and "
     "visualizations. The notebook_path parameter must be an absolute path.",
     "input_schema": _schema({"notebook_path": _s("The absolute path to the Jupyter notebook file to read"),
                              "cell_id": _s("The ID of a specific cell to read")}, ["notebook_path"])},
    {"name": "NotebookEdit", "description": "Completely replaces the contents of a specific cell in a Jupyter "
     "notebook (.ipynb file) with new source. Use edit_mode=insert to add a new cell at the index specified "
     "by cell_number. Use edit_mode=delete to delete the cell at the index specified by cell_number.",
     "input_schema": _schema({"notebook_path": _s("The absolute path to the Jupyter notebook file to edit"),
                              "cell_id": _s("The ID of the cell to edit"),
                              "new_source": _s("The new source for the cell"),
                              "cell_type": _s("The type of the cell (code or markdown)", enum=["code", "markdown"]),
                              "edit_mode": _s("The type of edit to make", enum=["replace", "insert", "delete"])},
                             ["notebook_path", "new_source"])},
    {"name": "WebFetch", "description": "Fetches content from a specified URL and processes it using an AI "
     "model. Takes a URL and a prompt as input, fetches the URL content, converts HTML to markdown, and "
     "processes the content with the prompt using a small, fast model. Includes a self-cleaning 15-minute "
     "cache. When a URL redirects to a different host, the tool will inform you and provide the redirect URL.",
     "input_schema": _schema({"url": _s("The URL to fetch content from", format="uri"),
                              "prompt": _s("The prompt to run on the fetched content")}, ["url", "prompt"])},
    {"name": "TodoWrite", "description": "Use this tool to create and manage a structured task list for your "
     "current coding session. This helps you track progress, organize complex tasks, and demonstrate "
     "thoroughness to the user. Use it proactively for complex multi-step tasks (3 or more steps), when the "
     "user provides multiple tasks, and after receiving new instructions. Mark tasks complete immediately.",
     "input_schema": _schema({"todos": {"type": "array", "description": "The updated todo list",
                                        "items": {"type": "object", "additionalProperties": False,
                                                  "required": ["content", "status", "priority", "id"],
                                                  "properties": {"content": {"type": "string", "minLength": 1},
                                                                 "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                                                                 "priority": {"type": "string", "enum": ["high", "medium", "low"]},
                                                                 "id": {"type": "string"}}}}}, ["todos"])},
    {"name": "WebSearch", "description": "Allows Claude to search the web and use the results to inform "
     "responses. Provides up-to-date information for current events and recent data. Returns search result "
     "information formatted as search result blocks. Domain filtering is supported.",
     "input_schema": _schema({"query": _s("The search query to use", minLength=2),
                              "allowed_domains": {"type": "array", "items": {"type": "string"},
                                                  "description": "Only include search results from these domains"},
                              "blocked_domains": {"type": "array", "items": {"type": "string"},
                                                  "description": "Never include search results from these domains"}},
                             ["query"])},
    {"name": "BashOutput", "description": "Retrieves output from a running or completed background bash "
     "shell. Always returns only new output since the last check, along with shell status.",
     "input_schema": _schema({"bash_id": _s("The ID of the background shell to retrieve output from"),
                              "filter": _s("Optional regular expression to filter the output lines")},
                             ["bash_id"])},
    {"name": "KillShell", "description": "Kills a running background bash shell by its ID. Returns a "
     "success or failure status.",
     "input_schema": _schema({"shell_id": _s("The ID of the background shell to kill")}, ["shell_id"])},
    {"name": "SlashCommand", "description": "Execute a slash command within the main conversation. Only "
     "use it for custom slash commands that appear in the Available Commands list.",
     "input_schema": _schema({"command": _s("The slash command to execute with its arguments, e.g. \"/review-pr 123\"")},
                             ["command"])},
    {"name": "mcp__github__create_issue", "description": "Create a new issue in a GitHub repository.",
     "input_schema": _schema({"owner": _s("Repository owner"), "repo": _s("Repository name"),
                              "title": _s("Issue title"), "body": _s("Issue body content"),
                              "labels": {"type": "array", "items": {"type": "string"}, "description": "Labels to apply"},
                              "assignees": {"type": "array", "items": {"type": "string"}, "description": "Usernames to assign"}},
                             ["owner", "repo", "title"])},
    {"name": "mcp__github__list_pull_requests", "description": "List and filter repository pull requests.",
     "input_schema": _schema({"owner": _s("Repository owner"), "repo": _s("Repository name"),
                              "state": _s("Filter by state", enum=["open", "closed", "all"]),
                              "head": _s("Filter by head user or head organization and branch name"),
                              "base": _s("Filter by base branch name"),
                              "sort": _s("What to sort results by", enum=["created", "updated", "popularity", "long-running"]),
                              "per_page": _n("Results per page (max 100)"), "page": _n("Page number")},
                             ["owner", "repo"])},
    {"name": "mcp__github__get_file_contents", "description": "Get the contents of a file or directory "
     "from a GitHub repository.",
     "input_schema": _schema({"owner": _s("Repository owner (username or organization)"),
                              "repo": _s("Repository name"), "path": _s("Path to the file or directory"),
                              "branch": _s("Branch to get contents from")}, ["owner", "repo", "path"])},
    {"name": "mcp__postgres__query", "description": "Run a read-only SQL query against the connected "
     "PostgreSQL database and return the rows as JSON. Statements that modify data are rejected.",
     "input_schema": _schema({"sql": _s("The SQL query to run"),
                              "params": {"type": "array", "items": {}, "description": "Positional parameters ($1, $2, ...)"},
                              "max_rows": _n("Maximum number of rows to return (default 200)")}, ["sql"])},
    {"name": "mcp__slack__post_message", "description": "Post a new message to a Slack channel.",
     "input_schema": _schema({"channel_id": _s("The ID of the channel to post to"),
                              "text": _s("The message text to post"),
                              "thread_ts": _s("Timestamp of the parent message to reply in a thread")},
                             ["channel_id", "text"])},
    {"name": "mcp__sentry__get_issue", "description": "Retrieve and analyze a Sentry issue by ID or URL. "
     "Returns the title, culprit, first and last seen times, event count and the latest stack trace.",
     "input_schema": _schema({"issue_id_or_url": _s("Sentry issue ID or URL to analyze")}, ["issue_id_or_url"])},
]

CODING_SYSTEM = """You are Claude Code, Anthropic's official CLI for Claude.
You are an interactive CLI tool that helps users with software engineering tasks. Use the instructions \
below and the tools available to you to assist the user.

IMPORTANT: Assist with defensive security tasks only. Refuse to create, modify, or improve code that may \
be used maliciously. Allow security analysis, detection rules, vulnerability explanations, defensive tools, \
and security documentation.
IMPORTANT: You must NEVER generate or guess URLs for the user unless you are confident that the URLs are for \
helping the user with programming. You may use URLs provided by the user in their messages or local files.

If the user asks for help or wants to give feedback inform them of the following:
- /help: Get help with using Claude Code
- To give feedback, users should report the issue at the project's issue tracker

# Tone and style
You should be concise, direct, and to the point. When you run a non-trivial bash command, you should \
explain what the command does and why you are running it, to make sure the user understands what you are \
doing (this is especially important when you are running a command that will make changes to the user's \
system). Remember that your output will be displayed on a command line interface. Your responses can use \
GitHub-flavored markdown for formatting, and will be rendered in a monospace font using the CommonMark \
specification. Output text to communicate with the user; all text you output outside of tool use is \
displayed to the user. Only use tools to complete tasks. Never use tools like Bash or code comments as \
means to communicate with the user during the session.
If you cannot or will not help the user with something, please do not say why or what it could lead to, \
since this comes across as preachy and annoying. Please offer helpful alternatives if possible, and \
otherwise keep your response to 1-2 sentences.
Only use emojis if the user explicitly requests it. Avoid using emojis in all communication unless asked.
IMPORTANT: You should minimize output tokens as much as possible while maintaining helpfulness, quality, \
and accuracy. Only address the specific query or task at hand, avoiding tangential information unless \
absolutely critical for completing the request. If you can answer in 1-3 sentences or a short paragraph, \
please do.
IMPORTANT: You should NOT answer with unnecessary preamble or postamble (such as explaining your code or \
summarizing your action), unless the user asks you to.
Do not add additional code explanation summary unless requested by the user. After working on a file, just \
stop, rather than providing an explanation of what you did.
Answer the user's question directly, without elaboration, explanation, or details. One word answers are \
best. Avoid introductions, conclusions, and explanations. You MUST avoid text before/after your response, \
such as "The answer is <answer>.", "Here is the content of the file..." or "Based on the information \
provided, the answer is..." or "Here is what I will do next...". Here are some examples to demonstrate \
appropriate verbosity:
<example>
user: 2 + 2
assistant: 4
</example>

<example>
user: is 11 a prime number?
assistant: Yes
</example>

<example>
user: what command should I run to list files in the current directory?
assistant: ls
</example>

<example>
user: How many golf balls fit inside a jetta?
assistant: 150000
</example>

<example>
user: what files are in the directory src/?
assistant: [runs ls and sees foo.c, bar.c, baz.c]
user: which file contains the implementation of foo?
assistant: src/foo.c
</example>

# Proactiveness
You are allowed to be proactive, but only when the user asks you to do something. You should strive to \
strike a balance between:
- Doing the right thing when asked, including taking actions and follow-up actions
- Not surprising the user with actions you take without asking
For example, if the user asks you how to approach something, you should do your best to answer their \
question first, and not immediately jump into taking actions.

# Following conventions
When making changes to files, first understand the file's code conventions. Mimic code style, use existing \
libraries and utilities, and follow existing patterns.
- NEVER assume that a given library is available, even if it is well known. Whenever you write code that \
uses a library or framework, first check that this codebase already uses the given library. For example, \
you might look at neighboring files, or check the package.json (or cargo.toml, and so on depending on the \
language).
- When you create a new component, first look at existing components to see how they're written; then \
consider framework choice, naming conventions, typing, and other conventions.
- When you edit a piece of code, first look at the code's surrounding context (especially its imports) to \
understand the code's choice of frameworks and libraries. Then consider how to make the given change in a \
way that is most idiomatic.
- Always follow security best practices. Never introduce code that exposes or logs secrets and keys. Never \
commit secrets or keys to the repository.

# Code style
- IMPORTANT: DO NOT ADD ***ANY*** COMMENTS unless asked

# Task Management
You have access to the TodoWrite tool to help you manage and plan tasks. Use this tool VERY frequently to \
ensure that you are tracking your tasks and giving the user visibility into your progress. These tools are \
also EXTREMELY helpful for planning tasks, and for breaking down larger complex tasks into smaller steps. \
If you do not use this tool when planning, you may forget to do important tasks - and that is unacceptable.
It is critical that you mark todos as completed as soon as you are done with a task. Do not batch up \
multiple tasks before marking them as completed.

# Doing tasks
The user will primarily request you perform software engineering tasks. This includes solving bugs, adding \
new functionality, refactoring code, explaining code, and more. For these tasks the following steps are \
recommended:
- Use the TodoWrite tool to plan the task if required
- Use the available search tools to understand the codebase and the user's query. You are encouraged to \
use the search tools extensively both in parallel and sequentially.
- Implement the solution using all tools available to you
- Verify the solution if possible with tests. NEVER assume specific test framework or test script. Check the \
README or search codebase to determine the testing approach.
- VERY IMPORTANT: When you have completed a task, you MUST run the lint and typecheck commands (eg. npm run \
lint, npm run typecheck, ruff, etc.) with Bash if they were provided to you to ensure your code is correct. \
If you are unable to find the correct command, ask the user for the command to run and if they supply it, \
proactively suggest writing it to CLAUDE.md so that you will know to run it next time.
NEVER commit changes unless the user explicitly asks you to. It is VERY IMPORTANT to only commit when \
explicitly asked, otherwise the user will feel that you are being too proactive.

# Tool usage policy
- When doing file search, prefer to use the Task tool in order to reduce context usage.
- You should proactively use the Task tool with specialized agents when the task at hand matches the \
agent's description.
- When WebFetch returns a message about a redirect to a different host, you should immediately make a new \
WebFetch request with the redirect URL provided in the response.
- You have the capability to call multiple tools in a single response. When multiple independent pieces of \
information are requested, batch your tool calls together for optimal performance. When making multiple \
bash tool calls, you MUST send a single message with multiple tools calls to run the calls in parallel. \
For example, if you need to run "git status" and "git diff", send a single message with two tool calls to \
run the calls in parallel.

Here is useful information about the environment you are running in:
<env>
Working directory: /home/dev/projects/inventory-service
Is directory a git repo: Yes
Platform: linux
OS Version: Linux 6.8.0-45-generic
Today's date: 2025-03-18
</env>
You are powered by the model named Sonnet 4. The exact model ID is claude-sonnet-4-20250514.

IMPORTANT: Always use the TodoWrite tool to plan and track tasks throughout the conversation.

# Code References

When referencing specific functions or pieces of code include the pattern `file_path:line_number` to allow \
the user to easily navigate to the source code location.

<example>
user: Where are errors from the client handled?
assistant: Clients are marked as failed in the `connectToServer` function in src/services/process.ts:712.
</example>

gitStatus: This is the git status at the start of the conversation. Note that this status is a snapshot in \
time, and will not update during the conversation.
Current branch: feature/stock-reservations

Main branch (you will usually use this for PRs): main

Status:
M src/inventory/reservations.py
M tests/test_reservations.py
?? notes/reservation-design.md

Recent commits:
a41c9e2 Add reservation expiry job
77b0d13 Split stock levels per warehouse
e0c5f8a Bump fastapi to 0.111
3d9a2b1 Fix rounding in order totals
9f7e6c0 Initial inventory service skeleton"""

CLAUDE_MD = """<system-reminder>
As you answer the user's questions, you can use the following context:
# claudeMd
Codebase and user instructions are shown below. Be sure to adhere to these instructions. IMPORTANT: These \
instructions OVERRIDE any default behavior and you MUST follow them exactly as written.

Contents of /home/dev/projects/inventory-service/CLAUDE.md (project instructions, checked into the codebase):

# Inventory service
- Python 3.11, FastAPI, SQLAlchemy 2.0 (async), PostgreSQL 16.
- Run tests with `make test` (pytest -q, uses a throwaway database in Docker).
- Lint with `make lint` (ruff check + ruff format --check + mypy --strict src).
- Money is always `Decimal`, never float. Quantities are `int`.
- Every public function has type hints; no bare `except`.
- Migrations live in `migrations/versions`; create them with `alembic revision --autogenerate -m "..."`.
</system-reminder>"""


def _tool_use(tid: str, name: str, inp: dict) -> dict:
    return {"type": "tool_use", "id": tid, "name": name, "input": inp}


def _tool_result(tid: str, content, is_error: bool = False) -> dict:
    block = {"type": "tool_result", "tool_use_id": tid, "content": content}
    if is_error:
        block["is_error"] = True
    return block


def _numbered(src: str) -> str:
    return "\n".join(f"{i:>6}\t{line}" for i, line in enumerate(src.splitlines(), 1))


# ================================================================================================
# The corpus
# ================================================================================================

def corpus() -> list[tuple[str, str, dict]]:
    """``(category, name, body)`` for every request, deterministic."""
    cases: list[tuple[str, str, dict]] = []

    def add(category: str, name: str, messages: list, system=None, tools=None) -> None:
        body = {"model": MODEL, "messages": messages}
        if system is not None:
            body["system"] = system
        if tools is not None:
            body["tools"] = tools
        cases.append((category, name, body))

    def user(content) -> dict:
        return {"role": "user", "content": content}

    def assistant(content) -> dict:
        return {"role": "assistant", "content": content}

    # ---- short chats ----------------------------------------------------------------------------
    add("chat", "hi", [user("hi")])
    add("chat", "question", [user("What is the capital of Australia, and why isn't it Sydney?")],
        system="You are a helpful assistant.")
    add("chat", "three-turns", [user("Can you recommend a good book about habits?"),
                                assistant("Sure! \"Atomic Habits\" by James Clear is a popular, practical choice. "
                                          "It explains how small changes compound over time."),
                                user("Is there something more research-based?")],
        system="You are a friendly librarian. Keep answers under 80 words.")
    add("chat", "translate", [user("Translate into French: \"The meeting has been moved to Thursday at 3 pm; "
                                   "please bring the quarterly figures.\"")])
    add("chat", "math", [user("If a train leaves at 14:35 and arrives at 18:10, how long is the trip? "
                              "Show the steps.")], system="Answer step by step.")
    add("chat", "six-turns", [user("I'm planning a trip to Portugal in May."),
                              assistant("That's a lovely time to go: warm but not too hot. How long will you stay?"),
                              user("About ten days. I like food, history and some hiking."),
                              assistant("Then consider Lisbon (4 days), Porto and the Douro valley (4 days), and "
                                        "two days in Sintra or the Peneda-Gerês national park for hiking."),
                              user("How do I get from Lisbon to Porto?"),
                              assistant("The Alfa Pendular train takes about 3 hours; book a few days ahead."),
                              user("Great, and what should I eat in Porto?")],
        system=[{"type": "text", "text": "You are a travel assistant.", "cache_control": {"type": "ephemeral"}}])
    add("chat", "thinking-history", [user("Is 391 prime?"),
                                     assistant([{"type": "thinking", "thinking": "391 = 17 * 23, since 17*23 = 391. So not prime.",
                                                 "signature": "sig"},
                                                {"type": "text", "text": "No: 391 = 17 × 23."}]),
                                     user("And 397?")])

    # ---- long English prose ---------------------------------------------------------------------
    add("prose", "one-paragraph", [user("Summarize in one sentence:\n\n" + PROSE[0])])
    add("prose", "letter", [user("Rewrite this letter in a warmer tone:\n\n" + PROSE[2])])
    add("prose", "story", [user("Continue this story for two more paragraphs:\n\n" + PROSE[3])],
        system="You are a novelist with a quiet, observant style.")
    add("prose", "essay-5", [user("Proofread the following text and list every change:\n\n"
                                  + "\n\n".join(PROSE[i] for i in (1, 4, 5, 8, 9)))])
    add("prose", "all-10", [user("Here are ten unrelated texts. Classify each by genre.\n\n"
                                 + "\n\n---\n\n".join(PROSE))])
    add("prose", "long-x3", [user("\n\n".join(PROSE[(i * 7) % 10] for i in range(30))
                                  + "\n\nWhich of these paragraphs would you cut from a magazine issue?")],
        system="You are an experienced magazine editor.")
    add("prose", "legal+news", [user(PROSE[6] + "\n\n" + PROSE[5] + "\n\nExplain both in plain words.")])

    # ---- source code ----------------------------------------------------------------------------
    for lang, src in CODE.items():
        add("code", lang, [user(f"Review this {lang} code and point out bugs:\n\n```{lang}\n{src}```")])
    add("code", "python-textwrap", [user("Explain how this module works:\n\n```python\n"
                                         + python_source("textwrap") + "```")])
    add("code", "python-json-decoder", [user("Add type hints to this module:\n\n```python\n"
                                             + python_source("json.decoder") + "```")])
    add("code", "diff", [user("Write a commit message for this diff:\n\n" + DIFF)])

    # ---- JSON -----------------------------------------------------------------------------------
    add("json", "users-pretty", [user("Which users have a negative balance?\n\n"
                                      + json.dumps(json_users(25, 1), indent=2, ensure_ascii=False))])
    add("json", "users-compact", [user("Convert to CSV:\n"
                                       + json.dumps(json_users(60, 2), ensure_ascii=False, separators=(",", ":")))])
    add("json", "github-issue", [user("Triage this issue:\n" + json.dumps(json_issue(), indent=2))])
    add("json", "geojson", [user("Compute the total area per zoning class:\n"
                                 + json.dumps(json_geo(30, 3)))])
    add("json", "package.json", [user("Which dependencies are outdated?\n" + json.dumps(package_json(), indent=2))])

    # ---- CJK and emoji --------------------------------------------------------------------------
    add("cjk", "chinese", [user("请把下面这段话总结成三点：\n\n" + CJK["zh"])], system="你是一个乐于助人的助手。")
    add("cjk", "japanese", [user("次の日記を英語に翻訳してください。\n\n" + CJK["ja"])])
    add("cjk", "korean", [user("다음 글을 영어로 번역해 주세요.\n\n" + CJK["ko"])])
    add("cjk", "emoji", [user(CJK["emoji"]), assistant("🥳 Thank you!! 🎉"), user("What did the 🐶 say? 😄")])
    add("cjk", "zh-en-mixed", [user(CJK["mixed"] + "\n\n请用英文解释 rate limit 的含义。")])
    add("cjk", "long-chinese", [user("\n".join([CJK["zh"]] * 4) + "\n\n这段文字重复了几次？")])

    # ---- multi-turn tool use --------------------------------------------------------------------
    weather = [{"name": "get_weather", "description": "Get the current weather for a city.",
                "input_schema": {"type": "object", "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}},
               {"name": "get_forecast", "description": "Get a multi-day forecast for a city.",
                "input_schema": {"type": "object", "properties": {
                    "city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 10}},
                    "required": ["city", "days"]}}]
    add("tools", "weather-first-turn", [user("What's the weather in Paris and Tokyo right now?")], tools=weather)
    add("tools", "weather-parallel", [
        user("What's the weather in Paris and Tokyo right now?"),
        assistant([{"type": "text", "text": "I'll check both cities."},
                   _tool_use("toolu_01", "get_weather", {"city": "Paris", "unit": "celsius"}),
                   _tool_use("toolu_02", "get_weather", {"city": "Tokyo", "unit": "celsius"})]),
        user([_tool_result("toolu_01", '{"temp": 18.5, "conditions": "partly cloudy", "humidity": 62}'),
              _tool_result("toolu_02", [{"type": "text", "text": '{"temp": 24.1, "conditions": "clear", "humidity": 48}'}])]),
        assistant("Paris is 18.5 °C and partly cloudy; Tokyo is 24.1 °C and clear."),
        user("And the 5-day forecast for Tokyo?"),
        assistant([_tool_use("toolu_03", "get_forecast", {"city": "Tokyo", "days": 5})]),
        user([_tool_result("toolu_03", json.dumps([{"day": d, "high": 24 + d % 3, "low": 16 + d % 2,
                                                    "rain_probability": (d * 17) % 100} for d in range(5)]))])],
        tools=weather)
    sql_tool = [{"name": "run_sql", "description": "Run a read-only SQL query on the analytics warehouse.",
                 "input_schema": {"type": "object", "properties": {"query": {"type": "string"}},
                                  "required": ["query"]}}]
    rows = [{"region": r, "orders": 1000 + i * 137, "revenue": round(12345.67 * (i + 1), 2)}
            for i, r in enumerate(["north", "south", "east", "west", "central"])]
    add("tools", "sql-error-retry", [
        user("How many orders per region last month?"),
        assistant([_tool_use("toolu_s1", "run_sql", {"query": "SELECT region, count(*) FROM order GROUP BY 1"})]),
        user([_tool_result("toolu_s1", 'ERROR: syntax error at or near "order"\nLINE 1: SELECT region, count(*) FROM order GROUP BY 1\n'
                                       '                                    ^', is_error=True)]),
        assistant([{"type": "text", "text": "`order` is reserved; quoting the table name."},
                   _tool_use("toolu_s2", "run_sql", {"query": 'SELECT region, count(*) AS orders, sum(total) AS revenue '
                                                              'FROM "order" WHERE created_at >= date_trunc(\'month\', now()) '
                                                              '- interval \'1 month\' GROUP BY 1 ORDER BY 2 DESC'})]),
        user([_tool_result("toolu_s2", json.dumps(rows, indent=1))])], tools=sql_tool)
    calc = [{"name": "calculator", "description": "Evaluate an arithmetic expression.",
             "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}},
                              "required": ["expression"]}}]
    msgs = [user("Compute the compound interest on $10,000 at 4.5% for 1 to 8 years, one year at a time.")]
    for year in range(1, 9):
        tid = f"toolu_c{year}"
        msgs.append(assistant([_tool_use(tid, "calculator", {"expression": f"10000 * (1 + 0.045) ** {year} - 10000"})]))
        msgs.append(user([_tool_result(tid, f"{10000 * 1.045 ** year - 10000:.2f}")]))
    add("tools", "calculator-8-rounds", msgs, tools=calc, system="Use the calculator for every number.")
    add("tools", "file-read-results", [
        user("Why does the test fail?"),
        assistant([_tool_use("toolu_r1", "read_file", {"path": "tests/test_models.py"}),
                   _tool_use("toolu_r2", "run_tests", {"path": "tests/test_models.py", "verbose": True})]),
        user([_tool_result("toolu_r1", _numbered(python_source("fractions", 6000))),
              _tool_result("toolu_r2", PYTEST_OUTPUT)])],
        tools=[{"name": "read_file", "description": "Read a file from the repository.",
                "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
               {"name": "run_tests", "description": "Run pytest on a path.",
                "input_schema": {"type": "object", "properties": {"path": {"type": "string"},
                                                                  "verbose": {"type": "boolean"}}, "required": ["path"]}}])

    # ---- Claude-Code-like sessions --------------------------------------------------------------
    system_blocks = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                      "cache_control": {"type": "ephemeral"}},
                     {"type": "text", "text": CODING_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    first = user([{"type": "text", "text": CLAUDE_MD},
                  {"type": "text", "text": "add an endpoint to cancel a stock reservation, with tests"}])
    add("claude_code", "first-turn", [first], system=system_blocks, tools=CODING_TOOLS)

    reservations_src = python_source("queue")       # stands in for the file being edited
    turns = [first,
             assistant([{"type": "text", "text": "I'll start by looking at the existing reservation code."},
                        _tool_use("toolu_cc1", "TodoWrite", {"todos": [
                            {"id": "1", "content": "Read reservations module and tests", "status": "in_progress", "priority": "high"},
                            {"id": "2", "content": "Add cancel endpoint", "status": "pending", "priority": "high"},
                            {"id": "3", "content": "Write tests", "status": "pending", "priority": "medium"},
                            {"id": "4", "content": "Run make test and make lint", "status": "pending", "priority": "medium"}]}),
                        _tool_use("toolu_cc2", "Grep", {"pattern": "def (reserve|release)", "path": "src",
                                                        "output_mode": "content", "-n": True}),
                        _tool_use("toolu_cc3", "Read", {"file_path": "/home/dev/projects/inventory-service/src/inventory/reservations.py"})]),
             user([_tool_result("toolu_cc1", "Todos have been modified successfully. Ensure that you continue to use the todo "
                                             "list to track your progress. Please proceed with the current tasks if applicable"),
                   _tool_result("toolu_cc2", "src/inventory/reservations.py:41:async def reserve(session, sku: str, qty: int, ttl: int = 900) -> Reservation:\n"
                                             "src/inventory/reservations.py:88:async def release(session, reservation_id: UUID) -> None:\n"
                                             "src/inventory/api.py:57:async def reserve_stock(body: ReserveIn, session=Depends(db)):"),
                   _tool_result("toolu_cc3", _numbered(reservations_src))])]
    add("claude_code", "after-reads", turns, system=system_blocks, tools=CODING_TOOLS)

    long_turns = list(turns)
    edits = [("queue.py", "class Empty(Exception):", "class Empty(LookupError):"),
             ("api.py", "@router.post(\"/reservations\")", "@router.post(\"/reservations\")\n@router.delete(\"/reservations/{rid}\")"),
             ("test_reservations.py", "def test_reserve", "def test_cancel_releases_stock(client):\n    ...\n\ndef test_reserve")]
    for i, (path, old, new) in enumerate(edits * 3):
        tid = f"toolu_cl{i}"
        long_turns.append(assistant([{"type": "text", "text": f"Updating {path}."},
                                     _tool_use(tid, "Edit", {"file_path": f"/home/dev/projects/inventory-service/src/{path}",
                                                             "old_string": old, "new_string": new})]))
        long_turns.append(user([_tool_result(tid, f"The file /home/dev/projects/inventory-service/src/{path} has been updated. "
                                                  "Here's the result of running `cat -n` on a snippet of the edited file:\n"
                                                  + _numbered(CODE["go"][:900]))]))
    long_turns.append(assistant([_tool_use("toolu_clt", "Bash", {"command": "make test", "description": "Run the test suite"})]))
    long_turns.append(user([_tool_result("toolu_clt", PYTEST_OUTPUT)]))
    long_turns.append(assistant("One test fails because of float rounding in `Order.total`; fixing it to use Decimal."))
    long_turns.append(user("ok, also make sure lint passes"))
    add("claude_code", "long-session", long_turns, system=system_blocks, tools=CODING_TOOLS)
    add("claude_code", "tools-only-no-history", [user("what does this repo do?")], system=CODING_SYSTEM,
        tools=CODING_TOOLS[:20])

    # ---- images ---------------------------------------------------------------------------------
    sizes = [("png-32", png(32, 32, 1), "image/png"), ("png-200x150", png(200, 150, 2), "image/png"),
             ("png-800x600", png(800, 600), "image/png"), ("jpeg-1024x768", jpeg(1024, 768), "image/jpeg"),
             ("png-1920x1080", png(1920, 1080), "image/png"), ("jpeg-4000x3000", jpeg(4000, 3000), "image/jpeg"),
             ("png-300x2400-tall", png(300, 2400), "image/png"), ("jpeg-1568x1568", jpeg(1568, 1568), "image/jpeg")]
    for name, data, media in sizes:
        add("images", name, [user([image_block(data, media), {"type": "text", "text": "What is in this image?"}])])
    add("images", "two-images", [user([{"type": "text", "text": "Compare these two screenshots."},
                                       image_block(png(1280, 800), "image/png"),
                                       image_block(jpeg(1280, 800), "image/jpeg")])])

    # ---- mixed ----------------------------------------------------------------------------------
    add("mixed", "screenshot+code", [user([image_block(png(1440, 900), "image/png"),
                                           {"type": "text", "text": "The page in the screenshot renders wrong. "
                                                                    "Here is the HTML:\n\n" + CODE["html"]}])],
        system="You are a senior front-end engineer.")
    add("mixed", "zh-code-json", [user("请解释这段代码，并根据下面的数据写一个测试：\n\n```go\n" + CODE["go"] + "```\n\n"
                                       + json.dumps(json_users(5, 9), ensure_ascii=False, indent=2))])
    add("mixed", "tool-result-image", [
        user("Take a screenshot of the dashboard and tell me if the numbers look right."),
        assistant([_tool_use("toolu_m1", "screenshot", {"url": "http://localhost:4173/", "full_page": False})]),
        user([_tool_result("toolu_m1", [{"type": "text", "text": "Screenshot taken (1280x720)."},
                                        image_block(png(1280, 720), "image/png")]),
              {"type": "text", "text": "Focus on the revenue card."}])],
        tools=[{"name": "screenshot", "description": "Capture a screenshot of a web page in a headless browser.",
                "input_schema": {"type": "object", "properties": {"url": {"type": "string"},
                                                                  "full_page": {"type": "boolean"}}, "required": ["url"]}}])
    add("mixed", "prose+sql+emoji", [user(PROSE[8] + "\n\n```sql\n" + CODE["sql"] + "```\n\nDoes this query scale? 🤔🚀")],
        system=[{"type": "text", "text": PROSE[4]}, {"type": "text", "text": "Be concise."}])
    add("mixed", "agent-all", [
        user([{"type": "text", "text": "Fix the failing test and update the README (see screenshot)."},
              image_block(jpeg(2560, 1440), "image/jpeg")]),
        assistant([{"type": "text", "text": "Reading the test output first."},
                   _tool_use("toolu_x1", "Bash", {"command": "pytest -q", "timeout": 120000})]),
        user([_tool_result("toolu_x1", PYTEST_OUTPUT)]),
        assistant([_tool_use("toolu_x2", "Read", {"file_path": "/repo/src/models.py"})]),
        user([_tool_result("toolu_x2", _numbered(CODE["java"])), {"type": "text", "text": "注意：金额必须用 Decimal。"}])],
        system=CODING_SYSTEM[:3000], tools=CODING_TOOLS[:8])

    for _, name, body in cases:
        last = body["messages"][-1]["content"]
        texts = [last] if isinstance(last, str) else [b.get("text", "") for b in last if b.get("type") == "text"]
        if any(MARKER_RE.search(t) for t in texts):
            raise AssertionError(f"{name}: its last user text would select a fake scenario")
    return cases


# ================================================================================================
# Measuring
# ================================================================================================

def summarize(rows: list[dict]) -> dict:
    errs = [r["error"] for r in rows]
    worst = max(rows, key=lambda r: abs(r["error"]))
    return {"n": len(rows),
            "mape": statistics.fmean(abs(e) for e in errs),
            "bias": statistics.fmean(errs),
            "worst": worst["error"], "worst_name": worst["name"],
            "under": sum(1 for e in errs if e < 0) / len(errs),
            "weighted": sum(r["estimate"] for r in rows) / sum(r["reference"] for r in rows) - 1,
            "reference_tokens": sum(r["reference"] for r in rows)}


def measure(tokenizer: str | None) -> tuple[list[dict], FakeUpstream]:
    fake = FakeUpstream(usage_from_request=True, tokenizer=tokenizer)
    fake.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(gateway_config(fake.url, pathlib.Path(tmp)))
            client = app.test_client()
            headers = {"Authorization": f"Bearer {LOCAL_KEY}", "anthropic-version": "2023-06-01"}
            rows = []
            for category, name, body in corpus():
                counted = client.post("/v1/messages/count_tokens", json=body, headers=headers)
                sent = client.post("/v1/messages", json={**body, "max_tokens": MAX_TOKENS}, headers=headers)
                if counted.status_code != 200 or sent.status_code != 200:
                    raise RuntimeError(f"{category}/{name}: count_tokens {counted.status_code} "
                                       f"{counted.get_data(as_text=True)[:300]}; messages {sent.status_code} "
                                       f"{sent.get_data(as_text=True)[:300]}")
                estimate = counted.get_json()["input_tokens"]
                reference = sent.get_json()["usage"]["input_tokens"]
                recorded = fake.requests[-1].get("input_tokens")
                if recorded != reference:
                    raise RuntimeError(f"{category}/{name}: gateway reported {reference}, fake counted {recorded}")
                rows.append({"category": category, "name": name, "estimate": estimate,
                             "reference": reference, "error": (estimate - reference) / reference})
            return rows, fake
    finally:
        fake.stop()


def pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per request")
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    ap.add_argument("--tokenizer", metavar="PATH",
                    help="Claude tokenizer.json, anthropic wheel (<= 0.38) or folder holding one "
                         "(default $FAKE_UPSTREAM_TOKENIZER or ~/.cache/claude-tokenizer)")
    args = ap.parse_args(argv)
    try:
        rows, fake = measure(args.tokenizer)
    except RuntimeError as e:
        print(f"count_tokens_accuracy: {e}", file=sys.stderr)
        return 2 if "usage-from-request needs" in str(e) else 1

    categories = list(dict.fromkeys(r["category"] for r in rows))
    summary = {c: summarize([r for r in rows if r["category"] == c]) for c in categories}
    summary["overall"] = summarize(rows)
    result = {"requests": len(rows), "violations": len(fake.violations), "summary": summary}
    if not args.json:
        if args.verbose:
            print(f"{'category':<12} {'request':<26} {'estimate':>9} {'reference':>9} {'error':>8}")
            for r in rows:
                print(f"{r['category']:<12} {r['name']:<26} {r['estimate']:>9} {r['reference']:>9} {pct(r['error']):>8}")
            print()
        print(f"count_tokens estimate vs Claude's tokenizer (via the fake upstream), {len(rows)} requests")
        print(f"{'category':<12} {'n':>3} {'MAPE':>7} {'bias':>8} {'worst':>8} {'under':>6} {'tokens':>8}  worst request")
        for c, s in summary.items():
            if c == "overall":
                print("-" * 80)
            print(f"{c:<12} {s['n']:>3} {s['mape'] * 100:>6.1f}% {pct(s['bias']):>8} {pct(s['worst']):>8} "
                  f"{s['under'] * 100:>5.0f}% {pct(s['weighted']):>8}  {s['worst_name']}")
        print(f"protocol violations seen by the fake: {len(fake.violations)}")
    print(json.dumps(result, sort_keys=True))
    for v in fake.violations:
        print("VIOLATION", v, file=sys.stderr)
    return 1 if fake.violations else 0


if __name__ == "__main__":
    sys.exit(main())

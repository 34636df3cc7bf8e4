"""Where a junk user's extra time goes, in process: the bounded seen read, the id lookup, FAISS.

Usage: .venv/bin/python reports/bench/issue14/junk_seen_breakdown.py BUNDLE (default /tmp/bg/dcnv2-rating)
"""
import time, secrets, numpy as np, tempfile
from pathlib import Path
from ratingctr.serving.embedded_redis import EmbeddedRedis
from ratingctr.serving.user_store import UserStore
from ratingctr.serving.ranker import load_ranker
import sys
r = load_ranker(Path(sys.argv[1] if len(sys.argv) > 1 else '/tmp/bg/dcnv2-rating'))
with EmbeddedRedis(Path(tempfile.mkdtemp())) as server:
    store = UserStore(server.url, prefix="p")
    import redis
    c = redis.Redis.from_url(server.url)
    key = store.layout.seen("junk")
    c.zadd(key, {secrets.token_hex(16): i for i in range(1000)})
    c.zadd(store.layout.seen("ok"), {"1": 1, "2": 2})
    for name in ("ok", "junk"):
        ts=[]
        for _ in range(300):
            t=time.perf_counter(); rec=store.read_user(name, "v"); ts.append(time.perf_counter()-t)
        t2=[]
        for _ in range(300):
            t=time.perf_counter(); s=r.item_indices(rec.seen); s=np.union1d(s, r.history(3)); t2.append(time.perf_counter()-t)
        t3=[]
        for _ in range(300):
            t=time.perf_counter(); items=r.retrieve(3, s, 50); t3.append(time.perf_counter()-t)
        print(name, len(rec.seen), "read %.3f ms  lookup %.3f ms  retrieve %.3f ms" % (np.median(ts)*1e3, np.median(t2)*1e3, np.median(t3)*1e3))

"""The junk user's extra request cost, in process: /v1/recommend through the ASGI app, then the
user-context step (Redis read + seen lookup) alone, then a cProfile of it (2,000 junk events: the
seen set is at its 1,000 bound).  Usage: .venv/bin/python reports/bench/issue14/junk_seen_profile.py
(the bundle path B below: the seed-1 DCNV2 rating bundle exported to /tmp/bg/dcnv2-rating)."""
import asyncio, sys, time, tempfile, secrets
from pathlib import Path
import numpy as np
sys.path.insert(0, "tests")
from helpers import in_process
from ratingctr.serving.embedded_redis import EmbeddedRedis
from ratingctr.bundle import load_bundle

B = "/tmp/bg/dcnv2-rating"
users = load_bundle(Path(B)).vocab["user_id"]
ordinary, junk = users[1], users[2]

async def main():
    with EmbeddedRedis(Path(tempfile.mkdtemp())) as server:
        async with in_process(bundles=f"main={B}", redis_url=server.url) as (c, gw):
            for b in range(2):
                ev = [{"user_id": junk, "item_id": f"junk-{secrets.token_hex(16)}", "rating": 1} for _ in range(1000)]
                r = await c.post("/v1/events", json={"events": ev}); assert r.status_code == 202, r.text
            store = gw.store
            for who in (ordinary, junk):
                ts, stages = [], {"redis": [], "faiss": [], "onnx": []}
                for _ in range(400):
                    t = time.perf_counter(); r = await c.post("/v1/recommend", json={"user_id": who, "k": 10}); ts.append(time.perf_counter() - t)
                # direct pieces
                name, ranker = gw.model(None)
                t1=[]
                for _ in range(300):
                    timings={}
                    t=time.perf_counter(); u,row,seen,fb = gw._user_context(name, ranker, who, None, timings); t1.append(time.perf_counter()-t)
                t2=[]
                for _ in range(300):
                    t=time.perf_counter(); items = ranker.retrieve(u, seen, max(ranker.candidates,10)); rk = ranker.rank(row, items, 10, {}, u, seen); t2.append(time.perf_counter()-t)
                print(who, "http %.3f ms | user_context %.3f ms (seen %d) | retrieve+rank %.3f ms" % (np.median(ts)*1e3, np.median(t1)*1e3, len(seen), np.median(t2)*1e3))
asyncio.run(main())

async def prof():
    import cProfile, pstats
    with EmbeddedRedis(Path(tempfile.mkdtemp())) as server:
        async with in_process(bundles=f"main={B}", redis_url=server.url) as (c, gw):
            for b in range(2):
                ev = [{"user_id": junk, "item_id": f"junk-{secrets.token_hex(16)}", "rating": 1} for _ in range(1000)]
                await c.post("/v1/events", json={"events": ev})
            name, ranker = gw.model(None)
            pr = cProfile.Profile(); pr.enable()
            for _ in range(300):
                gw._user_context(name, ranker, junk, None, {})
            pr.disable()
            pstats.Stats(pr).sort_stats("cumulative").print_stats(14)
asyncio.run(prof())

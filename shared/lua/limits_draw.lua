-- limits_draw: one draw from the token buckets (see lib/draw.lua and shared/limits.py).
-- KEYS: the buckets
-- ARGV: as draw's argv: 1 max_take_wait_ms, 2 max_peek_wait_ms, 3 gate, 4 holding, 5 report_grace_ms,
--   then per bucket: rate per ms, capacity, cost, mode
-- Builder: shared/scripts.py `draw`.

--! include draw
return draw(KEYS, ARGV)

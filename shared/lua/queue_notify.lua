-- queue_notify: tells the long-polls watching a request that never ran how it ended (a cache leader
-- refused at admission), without writing a record for it.
-- KEYS: 1 record, 2 watchers
-- ARGV: 1 message
-- Builder: shared/scripts.py `notify`.

--! include publish_outcome

publish_outcome(KEYS[1], KEYS[2], ARGV[1])
return 1

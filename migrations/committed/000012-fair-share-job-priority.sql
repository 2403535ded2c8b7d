--! Previous: sha1:34107480cf10f8a92ad716ad4e10f02c62ef3527
--! Hash: sha1:f552d372964b9f12cf1e1e0c5c8997e5ebcad0be
--! Message: fair share job priority

-- Fair share of the worker between organizations. graphile-worker takes the available job with the lowest
-- `priority`, then the earliest `run_at`; every job used to be queued at priority 0, so the queue was one FIFO and an
-- organization that queued 2,000 summaries made every other organization wait for all of them. Now an
-- organization's job is queued at the number of that organization's jobs already queued or running: its n-th
-- outstanding job (counting from 0) ranks with every other organization's n-th, and run_at (FIFO) breaks the ties.
-- The worker so serves organizations round-robin: a lone organization still has the whole worker (priorities never
-- hold a job back, they only order the ready ones), and one with nothing outstanding is served next whatever the
-- others have queued.
--
-- Trade-offs, chosen deliberately:
-- - The priority is fixed when the job is queued (graphile-worker never re-ranks), so it counts what was outstanding
--   then. After an organization's backlog has partly drained, its next job can rank ahead of its own older ones:
--   order within one organization is not FIFO (it never was with WORKER_CONCURRENCY > 1). A retried job keeps its
--   priority, so a retry does not lose its place to jobs queued while it was failing.
-- - The count stops at 1000: an organization's jobs beyond its first thousand outstanding all
--   rank 1000, in FIFO order with other organizations' jobs beyond theirs. That bounds the count to 1000 index entries
--   (the partial index jobs_org_id_status_idx) whatever the backlog, and at the LLM's pace the thousandth round is
--   hours away, where finer order no longer matters.
-- - No lock is added. summarizeDocument already serializes an organization's requests (the allowance lock), so its
--   counts are exact; two integration jobs of one organization queued at the same instant may both get the same
--   count, a tie that run_at breaks. An exact O(1) counter row per organization would be one more per-organization
--   lock taken by every job transition, in a different order from the live-event counter's, which risks deadlocks.
-- - Not per-organization queues (graphile-worker's queue_name): a named queue runs one job at a time, which would cap
--   a lone organization at one concurrent job instead of WORKER_CONCURRENCY, and a concurrency cap per tier would
--   likewise idle the worker while one organization alone has work. Ordering alone is fair without losing throughput.
create function app_private.fair_share_priority(org_id uuid, job_id uuid) returns int
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select count(*)::int
      from (select 1 from app_public.jobs j
             where j.org_id = fair_share_priority.org_id and j.status in ('queued', 'running') and j.id <> fair_share_priority.job_id
             limit 1000) outstanding
  $$;
comment on function app_private.fair_share_priority(uuid, uuid) is
  'The graphile-worker priority of a new job: how many other jobs of its organization are queued or running (at most 1000).';

-- Every kind of organization job (summaries, imports, syncs, publishing) is queued here, so all of them share the
-- organization's turn.
create or replace function app_private.enqueue_job(job app_public.jobs, task text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_token text := encode(public.gen_random_bytes(32), 'hex');
begin
  insert into app_private.job_tokens (job_id, token_hash) values ((job).id, sha256(convert_to(v_token, 'UTF8')));
  perform graphile_worker.add_job(task, json_build_object('jobId', (job).id, 'token', v_token),
    job_key => (job).id::text, max_attempts => (job).max_attempts,
    priority => app_private.fair_share_priority((job).org_id, (job).id));
end;
$$;
comment on function app_private.enqueue_job(app_public.jobs, text) is
  'Gives a new job its worker token and queues it for `task`, at its organization''s fair-share priority (app_private.fair_share_priority).';

-- Mail goes first: someone is waiting for a password reset or an invitation, and sending is quick, so it ranks ahead
-- of every organization's jobs (priority -1; theirs start at 0). Work that belongs to no organization (the hourly
-- prune_live_events, reseal_secrets) stays at 0 and takes its turn with each organization's first job.
create or replace function app_private.enqueue_email(recipient text, subject text, body text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
begin
  perform graphile_worker.add_job(
    'send_email',
    json_build_object('to', recipient, 'subject', subject, 'text', body),
    max_attempts => 5,
    priority => -1
  );
end;
$$;
comment on function app_private.enqueue_email(text, text, text) is 'Queues an email for the send_email task (5 attempts), ahead of organizations'' jobs.';

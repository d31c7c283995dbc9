"""Archiving finished exports to the team's storage (ARCHIVE_URL): streamed, verified, once.

The modules, each with one job:

- `naming`    where an archive goes, its manifest, which archives retention removes (pure);
- `resume`    what a download's answers mean: continue, resume, refresh the link, start over;
              and whether the bytes are the file (pure);
- `storage`   the archive location over obstore: streamed put, list, delete;
- `transfer`  one download streamed into storage, resuming, verified, bounded;
- `records`   the `archives` table: one row per export, with a lease as polling has;
- `job`       the archive job every replica runs: claim, transfer, manifest, retention, posts.
"""

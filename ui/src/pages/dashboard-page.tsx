// My vclusters with their status, and how much of my quota I use.

import { useEffect, useState } from 'preact/hooks'
import { api } from '../api.ts'
import { takeFlash, useApp } from '../app-context.ts'
import { formatTime, Loading, Notice, PageHeader, StatusBadge, UsageMeter, useLoad } from '../components.tsx'
import { Link } from '../router.tsx'
import { quotaKeys, quotaLabels } from '../types.ts'
import { liveVnodes, vclusterConverging } from '../vcluster-status.ts'

/** Fast while something converges (a create, a stop), slow otherwise: others may act too. */
const convergingPollMs = 1_000
const idlePollMs = 10_000

export function DashboardPage() {
  const { session, refreshSession } = useApp()
  const [flash] = useState(takeFlash)
  const list = useLoad(
    () => api.vclusters().then((answer) => answer.vclusters),
    [],
    (vclusters) => (vclusters?.some(vclusterConverging) === true ? convergingPollMs : idlePollMs),
  )
  // The usage shown below follows the list (a vcluster that finished deleting frees its quota).
  const count = list.data?.length
  useEffect(() => {
    void refreshSession()
  }, [count])

  const atVclusterQuota = session.usage.vclusters >= session.quota.vclusters
  return (
    <>
      <PageHeader
        title="Vclusters"
        subtitle={`Signed in as ${session.name} (group ${session.group}).`}
        actions={
          <Link
            href="/new-vcluster"
            class="button button-primary"
            aria-disabled={atVclusterQuota || undefined}
          >
            New vcluster
          </Link>
        }
      />
      {flash === null ? null : <Notice kind="success">{flash}</Notice>}
      <section aria-labelledby="vclusters-heading" class="card">
        <h2 id="vclusters-heading">My vclusters</h2>
        {list.error === null ? null : <Notice kind="error">{list.error}</Notice>}
        {list.loading && list.data === null ? <Loading what="your vclusters" /> : null}
        {list.data !== null && list.data.length === 0 ? (
          <p class="empty">
            You have no vclusters yet. <Link href="/new-vcluster">Create one</Link>: a few Linux containers on
            one private network, with a Jupyter workspace.
          </p>
        ) : null}
        {list.data !== null && list.data.length > 0 ? (
          <table class="table responsive">
            <caption class="sr-only">My vclusters</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Vnodes</th>
                <th scope="col">Subnet</th>
                <th scope="col">Per vnode</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((vcluster) => {
                const vnodes = liveVnodes(vcluster)
                const running = vnodes.filter((v) => v.observed === 'running').length
                return (
                  <tr key={vcluster.id}>
                    <th scope="row" data-label="Name">
                      <Link href={`/vclusters/${encodeURIComponent(vcluster.name)}`}>{vcluster.name}</Link>
                    </th>
                    <td data-label="Status">
                      <StatusBadge status={vcluster.status} />
                    </td>
                    <td data-label="Vnodes">
                      {running} of {vnodes.length} running
                    </td>
                    <td data-label="Subnet">
                      <code>{vcluster.subnet}</code>
                    </td>
                    <td data-label="Per vnode">
                      {vcluster.limits.cpuCores} cpu, {vcluster.limits.memoryMb} MB, {vcluster.limits.diskMb}{' '}
                      MB disk
                    </td>
                    <td data-label="Created">{formatTime(vcluster.createdAt)}</td>
                  </tr>
                )
              })}
            </tbody>
          </table>
        ) : null}
      </section>
      <section aria-labelledby="quota-heading" class="card">
        <h2 id="quota-heading">My quota</h2>
        <p class="muted">
          What the vclusters, images and port mappings of {session.name} use, of the group's quota.
        </p>
        <div class="usage-grid">
          {quotaKeys.map((key) => (
            <UsageMeter
              key={key}
              label={quotaLabels[key].name}
              used={session.usage[key]}
              total={session.quota[key]}
              unit={quotaLabels[key].unit}
            />
          ))}
        </div>
      </section>
    </>
  )
}

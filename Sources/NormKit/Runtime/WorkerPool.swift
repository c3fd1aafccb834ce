internal import CNormKitSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// NormKit's own worker threads, which ``Threading`` runs chunks on.
///
/// Dispatch's `concurrentPerform` allocated on the calling thread (several
/// times per parallel phase) and took tens of microseconds to wake its
/// workers. These threads are started once, when a kernel first needs them,
/// and then wait for work: they spin for a short while after each job (so
/// back-to-back passes find them awake) and then sleep on a condition
/// variable. A job is a ``WorkerJob`` value the caller keeps on its stack and
/// the pool holds as a one-word reference, so posting it allocates nothing.
///
/// One job runs at a time. A caller that finds the pool busy (another thread's
/// kernel is using it) runs its chunks alone; since chunks, not threads, fix
/// the results, that changes speed only.
@usableFromInline
final class WorkerPool: @unchecked Sendable {
    @usableFromInline static let shared = WorkerPool()

    /// The current job: its number in the high bits, its worker count in the
    /// low 16. Workers read both at once, so a late worker can never mix one
    /// job's number with another's count.
    private let state = Atomic<Int>(0)
    /// Workers of the current job (other than the caller) yet to finish it.
    private let pending = Atomic<Int>(0)
    /// Whether a caller holds the pool.
    private let busy = Atomic<Bool>(false)
    /// The current job; written before `state` is published (release) and
    /// cleared after every worker finished (acquire), read by the job's
    /// workers only.
    private var job: (any WorkerJob)?
    /// The caller's floating-point mode (MXCSR), which the workers run the
    /// job in (``Subnormals``); published with `job`.
    private var floatingPointMode: UInt32 = 0
    /// Started workers; guarded by `lock`.
    private var started = 0
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private let wake: UnsafeMutablePointer<pthread_cond_t>

    /// How many times a worker polls for a new job before it sleeps.
    static let spinsBeforeSleep = 20_000

    private init() {
        lock = .allocate(capacity: 1)
        wake = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        pthread_cond_init(wake, nil)
    }

    /// Runs `job.run(worker:)` for `worker` in `0..<workers`, worker 0 on the
    /// calling thread, and returns when all have finished; `false` (having
    /// run nothing) when the pool is busy.
    @usableFromInline
    func run(workers: Int, job: some WorkerJob) -> Bool {
        precondition(workers >= 2 && workers < 1 << 16)
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else { return false }
        defer { busy.store(false, ordering: .releasing) }
        startWorkers(workers - 1)
        self.job = job
        floatingPointMode = Subnormals.threadMode
        pending.store(workers - 1, ordering: .relaxed)
        pthread_mutex_lock(lock)
        let number = (state.load(ordering: .relaxed) >> 16) + 1
        state.store(number << 16 | workers, ordering: .releasing)
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(lock)
        job.run(worker: 0)
        var spins = 0
        while pending.load(ordering: .acquiring) > 0 {
            spins += 1
            if spins > 1000 { sched_yield() }
        }
        self.job = nil
        return true
    }

    /// Starts workers until `count` exist (worker indices 1...count).
    private func startWorkers(_ count: Int) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        while started < count {
            started += 1
            // The worker waits for the first job after the current one, which
            // the caller has not published yet (it does so after this returns).
            let context = Unmanaged.passRetained(WorkerContext(
                pool: self, index: started, seen: state.load(ordering: .relaxed) >> 16))
            var thread = pthread_t()
            let result = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                context.pool.workerLoop(index: context.index, seen: context.seen)
                return nil
            }, context.toOpaque())
            if result == 0 {
                pthread_detach(thread)
            } else {
                context.release()
                started -= 1
                return
            }
        }
    }

    /// A worker: waits for each job after the last one it saw and runs its
    /// share when its index is below the job's worker count.
    private func workerLoop(index: Int, seen first: Int) {
        // Named for profilers and debuggers (and the allocation tests, which
        // count what threads of this name allocate), before anything else.
        normkit_name_this_thread("normkit-worker")
        var seen = first
        while true {
            var current = state.load(ordering: .acquiring)
            var spins = 0
            while current >> 16 == seen {
                spins += 1
                if spins > WorkerPool.spinsBeforeSleep {
                    pthread_mutex_lock(lock)
                    while state.load(ordering: .acquiring) >> 16 == seen {
                        pthread_cond_wait(wake, lock)
                    }
                    pthread_mutex_unlock(lock)
                    spins = 0
                }
                current = state.load(ordering: .acquiring)
            }
            seen = current >> 16
            if index < current & 0xFFFF {
                Subnormals.with(threadMode: floatingPointMode) { job!.run(worker: index) }
                pending.subtract(1, ordering: .releasing)
            }
        }
    }

    private final class WorkerContext {
        let pool: WorkerPool
        let index: Int
        let seen: Int
        init(pool: WorkerPool, index: Int, seen: Int) {
            self.pool = pool
            self.index = index
            self.seen = seen
        }
    }
}

/// A parallel phase's work for `WorkerPool`: `run(worker:)` is called once per
/// worker index, concurrently.
@usableFromInline
protocol WorkerJob {
    func run(worker: Int)
}

/// A job the caller keeps on its stack, seen by the pool through a pointer: a
/// one-word value, so that holding it as `any WorkerJob` needs no box.
@usableFromInline
struct WorkerJobReference<Job: WorkerJob>: WorkerJob {
    @usableFromInline let job: UnsafePointer<Job>

    @inlinable
    init(job: UnsafePointer<Job>) { self.job = job }

    @inlinable
    func run(worker: Int) { job.pointee.run(worker: worker) }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

codigo_common::service_main!(
    "codigo-producer",
    codigo_producer::Config,
    codigo_producer::Application
);
